"""PyTorch without the start-up cost of its compiler, which cnnlab never uses.

Several of torch's own functions are wrapped so that torch.compile skips them (torch._disable_dynamo); each wrapper
imports torch._dynamo on its first call: 1.0-1.4 s on the 2-core EPYCs of benchmarks/results (python -X importtime),
a fifth of a run that reaches 99% in seconds. Among them are an optimiser's step, zero_grad, add_param_group,
state_dict and load_state_dict, and the FLOP counter's dispatch. cnnlab never compiles (device.py says why),
so here those functions run as the wrappers would run them once imported, without the import. The results are
torch's own (tested equal, bit for bit). With another torch whose wrappers differ, nothing is marked and the import
simply happens. The marks hold for the whole process: in a notebook that also uses torch.compile after a cnnlab
run, the compiler may trace those few functions instead of skipping them.
"""

from __future__ import annotations

import functools
import inspect

import torch

# The code object of torch's lazy dynamo-disabling wrapper (torch/_compile.py), to recognise the functions it wraps.
_WRAPPER_CODE = getattr(torch._disable_dynamo(lambda: None), "__code__", None)


def skip_compiler_import(wrapper) -> bool:
    """Mark a function torch wrapped with torch._disable_dynamo as already wrapped (what the wrapper itself caches
    after importing torch._dynamo), so that calling it imports nothing. Returns whether it was such a wrapper."""
    raw = getattr(wrapper, "__wrapped__", None)
    if raw is None or getattr(wrapper, "__code__", None) is not _WRAPPER_CODE:
        return False
    if not hasattr(raw, "__dynamo_disable"):
        setattr(raw, "__dynamo_disable", raw)
    return True


@functools.cache
def eager_optimizer(cls: type[torch.optim.Optimizer]) -> type[torch.optim.Optimizer]:
    """`cls` (torch.optim.SGD, AdamW) whose methods import nothing of the compiler: the step is torch's own step
    function run under no_grad, as its wrapper (torch.optim.optimizer._use_grad_for_differentiable) runs it in
    eager mode, and the optimiser's other wrapped methods are marked. Its state_dict is torch's own."""
    for name in ("zero_grad", "add_param_group", "state_dict", "load_state_dict"):
        skip_compiler_import(getattr(torch.optim.Optimizer, name))
    raw_step = inspect.unwrap(cls.step)

    def step(self, closure=None):
        with torch.no_grad():
            return raw_step(self, closure)

    step.__doc__ = cls.step.__doc__
    return type(cls.__name__, (cls,), {"step": step, "__module__": __name__, "__doc__": cls.__doc__})
