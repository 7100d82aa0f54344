"""Helpers the tests share: plain functions and classes, no fixtures (those live in the conftest.py files, which
call these). One module per kind of helper:

    data       synthetic MNIST-shaped sets, and image folders drawn on disk
    pictures   pictures of digits as a user would hand them in
    runs       run directories made for a test: image-folder models, stopped runs, saved weights
    cli        cnnlab's command line run in the test process
    servers    servers on 127.0.0.1: cnnlab's own (uvicorn in a thread), a stand-in MNIST mirror, the training API
    processes  child processes: the training worker, torchrun, killing a whole tree
    browser    the headless Chromium of the browser tests

Two scripts outside pytest import modules of it by path (tests/ on sys.path): tests/train/ddp_worker.py, which torchrun
runs, imports support.data, and benchmarks/distributed.py imports support.processes. Keep those two free of pytest.
"""
