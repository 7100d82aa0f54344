"""Serving benchmark: the latency of one prediction, and the web server under concurrent clients.

    python benchmarks/serve.py                                  # trains the lecture's three for an epoch each first
    python benchmarks/serve.py --runs runs/*-basic_cnn runs/*-inception_net runs/*-resnet --clients 8 --seconds 20

1. One prediction, in this process: PNG bytes of a real MNIST test digit drawn dark on a light 280x280
   canvas (what the web page sends) -> decode and preprocess -> model -> probabilities; p50 and p99 over
   --repeats predictions, and the same for the two halves alone.
2. The server: `cnnlab serve` in its own process on 127.0.0.1; --clients concurrent clients (one asyncio
   task each, httpx) post such images as JSON data URLs for --seconds; requests/s, p50/p99 latency,
   errors (any answer that is not 200 with the right digit counts as one).

3. The inside view: `cnnlab serve` with every run; one client posts the canvas PNGs (raw image/png) to
   /api/explain of each model in turn, --explain-repeats times; p50/p90 as the client sees them (HTTP, explain,
   the JSON of every layer's maps).
4. Memory: `cnnlab serve` again, 16 clients posting the largest pictures within the limits (4096x4096 grey, and
   2048x2048 RGBA: each 16 MB once decoded, the pixel budget of cnnlab.data.tensors.pictures) for --seconds; the server
   process's peak resident memory (the kernel's VmHWM) against its memory at rest before, and after.

A training run or a measurement that fails (a model whose loss stops being finite, a server that does not start,
any error) is recorded with its reason, shown in place of its figures, and the benchmark goes on (machine.attempt).

Writes serve.json and serve.md to --out (default benchmarks/results). Run it alone: the clients and the
server share the same cores.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import io
import json
import os
import shlex
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from PIL import Image

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from machine import ProcessFailed, attempt, describe_machine, failure_of, write_results  # noqa: E402

from cnnlab.data import load_mnist  # noqa: E402
from cnnlab.sysinfo import cpu_kind  # noqa: E402
from cnnlab.inference.predictor import Predictor  # noqa: E402
from cnnlab.runs import load  # noqa: E402
from cnnlab.serve.inputs import BODY_LIMIT  # noqa: E402
from cnnlab.data.tensors.pictures import load_image, to_mnist  # noqa: E402
from cnnlab.tables import format_table  # noqa: E402


def canvas_pngs(mnist, n: int = 50) -> list[tuple[bytes, int]]:
    """Test digits as the page sends them: scaled up, dark on white, on a 280x280 canvas, as PNG bytes."""
    out = []
    for i in range(n):
        digit = Image.fromarray(255 - mnist.test_images[i].numpy()).resize((196, 196), Image.Resampling.BILINEAR)
        canvas = Image.new("L", (280, 280), 255)
        canvas.paste(digit, (42 + (i % 5) * 6, 30 + (i % 7) * 5))
        buf = io.BytesIO()
        canvas.convert("RGBA").save(buf, format="PNG")
        out.append((buf.getvalue(), int(mnist.test_labels[i])))
    return out


def percentiles(xs: list[float]) -> dict:
    xs = sorted(xs)
    return {
        "n": len(xs),
        "p50_ms": 1000 * statistics.median(xs),
        "p99_ms": 1000 * xs[min(len(xs) - 1, int(round(0.99 * (len(xs) - 1))))],
        "mean_ms": 1000 * statistics.fmean(xs),
    }


def latency(predictor: Predictor, images: list[tuple[bytes, int]], repeats: int) -> dict:
    import torch

    torch.set_num_threads(1)  # as the server runs it
    for data, _ in images[:10]:
        predictor.predict(data)
    whole, prep, model = [], [], []
    correct = 0
    for k in range(repeats):
        data, label = images[k % len(images)]
        t0 = time.perf_counter()
        img = to_mnist(load_image(data))
        t1 = time.perf_counter()
        pred = predictor.predict_image(img)
        t2 = time.perf_counter()
        prep.append(t1 - t0)
        model.append(t2 - t1)
        whole.append(t2 - t0)
        correct += pred.top(1)[0][0] == label
    return {"whole": percentiles(whole), "preprocess": percentiles(prep), "model": percentiles(model), "accuracy": correct / repeats}


async def _load(url: str, bodies: list[tuple[str, int]], clients: int, seconds: float) -> dict:
    import httpx

    latencies: list[float] = []
    errors: dict[str, int] = {}
    stop = time.perf_counter() + seconds

    async def client(k: int) -> None:
        async with httpx.AsyncClient(timeout=10.0) as http:
            i = k
            while time.perf_counter() < stop:
                body, label = bodies[i % len(bodies)]
                i += clients
                t0 = time.perf_counter()
                try:
                    r = await http.post(url, content=body, headers={"Content-Type": "application/json"})
                    ok = r.status_code == 200 and r.json()["top"][0]["class"] == label
                    why = f"HTTP {r.status_code}" if r.status_code != 200 else "wrong digit"
                except (httpx.HTTPError, ValueError, KeyError) as e:
                    ok, why = False, type(e).__name__
                latencies.append(time.perf_counter() - t0)
                if not ok:
                    errors[why] = errors.get(why, 0) + 1

    t0 = time.perf_counter()
    await asyncio.gather(*(client(k) for k in range(clients)))
    elapsed = time.perf_counter() - t0
    return {"clients": clients, "seconds": elapsed, "requests": len(latencies), "requests_per_s": len(latencies) / elapsed,
            "errors": sum(errors.values()), "error_kinds": errors, **percentiles(latencies)}


class Server:
    """`cnnlab serve RUN ...` in its own process on a free port of 127.0.0.1, until the block ends."""

    def __init__(self, runs: list[str]) -> None:
        self.runs = runs

    def __enter__(self) -> "Server":
        import httpx

        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self.proc = subprocess.Popen([sys.executable, "-m", "cnnlab", "serve", *self.runs, "--port", str(self.port),
                                      "--no-training"], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        deadline = time.monotonic() + 120
        while True:
            try:
                if httpx.get(f"{self.url}/api/health", timeout=1).status_code == 200:
                    return self
            except httpx.HTTPError:
                pass
            if self.proc.poll() is not None or time.monotonic() > deadline:
                exited = self.proc.poll()
                self.__exit__()
                if exited is None:
                    raise RuntimeError("cnnlab serve did not answer /api/health within 120 s")
                raise ProcessFailed("cnnlab serve", exited, self.proc.stderr.read())
            time.sleep(0.2)

    def __exit__(self, *exc) -> None:
        self.proc.send_signal(signal.SIGINT)
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()

    def reset_peak(self) -> None:
        """Start the kernel's peak count (VmHWM) afresh, so that it measures what follows, not the start-up."""
        with open(f"/proc/{self.proc.pid}/clear_refs", "w") as f:
            f.write("5")

    def memory(self) -> dict[str, int]:
        """The server process's resident memory now (VmRSS) and at its peak so far (VmHWM), in bytes."""
        out = {}
        with open(f"/proc/{self.proc.pid}/status") as f:
            for line in f:
                key, _, value = line.partition(":")
                if key in ("VmRSS", "VmHWM"):
                    out[key] = int(value.split()[0]) * 1024
        return out


def server_load(checkpoint: str, images: list[tuple[bytes, int]], clients: int, seconds: float) -> dict:
    with Server([checkpoint]) as server:
        bodies = [(json.dumps({"image": "data:image/png;base64," + base64.b64encode(d).decode()}), y) for d, y in images]
        asyncio.run(_load(f"{server.url}/api/predict", bodies[:10], 2, 2.0))  # warm-up
        return asyncio.run(_load(f"{server.url}/api/predict", bodies, clients, seconds))


def explain_latency(runs: list[str], images: list[tuple[bytes, int]], repeats: int) -> list[dict]:
    """p50/p90 of /api/explain per served model, one client, as the page asks while the user draws."""
    import httpx

    out = []
    with Server(runs) as server, httpx.Client(base_url=server.url, timeout=30) as http:
        for m in http.get("/api/model").json()["models"]:
            measured, failed = attempt(_explain_one, http, m, images, repeats)
            out.append(measured or {"model": m["model"], "failed": failed})
            print("explain", json.dumps(out[-1]), flush=True)
    return out


def _explain_one(http, m: dict, images: list[tuple[bytes, int]], repeats: int) -> dict:
    times, sizes = [], []
    for k in range(repeats + 10):
        data, _ = images[k % len(images)]
        t0 = time.perf_counter()
        r = http.post(f"/api/explain?model={m['id']}", content=data, headers={"Content-Type": "image/png"})
        elapsed = time.perf_counter() - t0
        if r.status_code != 200:
            raise RuntimeError(f"/api/explain of {m['model']}: HTTP {r.status_code} {r.text[:200]}")
        if k >= 10:  # the first ones warm up
            times.append(elapsed)
            sizes.append(len(r.content))
    q = statistics.quantiles(times, n=10)
    return {"model": m["model"], "n": len(times), "p50_ms": 1000 * statistics.median(times),
            "p90_ms": 1000 * q[8], "answer_kb": statistics.median(sizes) / 1024,
            "layers": len(r.json()["layers"]), "parts": len(m["parts"])}


def largest_pictures() -> list[tuple[str, bytes]]:
    """The largest pictures within the limits, each 16 MB once decoded (a digit on a plain ground, so that the
    file is small: the memory follows the pixels, not the bytes)."""
    from PIL import ImageDraw

    out = []
    for mode, side in (("L", 4096), ("RGBA", 2048)):
        img = Image.new(mode, (side, side), "white")
        ImageDraw.Draw(img).line([(side // 2, side // 5), (side // 2, 4 * side // 5)], fill="black", width=side // 12)
        buf = io.BytesIO()
        img.save(buf, format="PNG")
        out.append((f"{side}x{side} {mode}", buf.getvalue()))
    return out


async def _flood(url: str, bodies: list[bytes], clients: int, seconds: float) -> dict:
    import httpx

    codes: dict[int, int] = {}
    stop = time.perf_counter() + seconds

    async def client(k: int) -> None:
        async with httpx.AsyncClient(timeout=60.0) as http:
            i = k
            while time.perf_counter() < stop:
                r = await http.post(url, content=bodies[i % len(bodies)], headers={"Content-Type": "image/png"})
                codes[r.status_code] = codes.get(r.status_code, 0) + 1
                i += 1

    await asyncio.gather(*(client(k) for k in range(clients)))
    return codes


def memory_under_load(runs: list[str], clients: int, seconds: float) -> dict:
    pictures = largest_pictures()
    with Server(runs) as server:
        import httpx

        small, _ = canvas_pngs(load_mnist(progress=False), 1)[0]
        httpx.post(f"{server.url}/api/predict", content=small, headers={"Content-Type": "image/png"}, timeout=30)
        before = server.memory()["VmRSS"]
        server.reset_peak()
        codes = asyncio.run(_flood(f"{server.url}/api/predict", [b for _, b in pictures], clients, seconds))
        time.sleep(2.0)
        after = server.memory()
    return {"clients": clients, "seconds": seconds, "pictures": [f"{name} ({len(b) / 1024:.0f} KB PNG)" for name, b in pictures],
            "answers": {str(k): v for k, v in sorted(codes.items())}, "rss_before_mb": before / 2**20,
            "peak_rss_mb": after["VmHWM"] / 2**20, "rss_after_mb": after["VmRSS"] / 2**20}


def _failed(what: str, reason: str) -> str:
    return f"{what} failed: {reason}"


def render(results: dict) -> str:
    machine = f"""# Serving: one prediction, and the server under load

Machine: {results['machine']}.  
Command: `{results['command']}` (run from the repository root). Load average (1 min) of the machine at the start
and the end: {results['load_average'][0]:.1f} and {results['load_average'][1]:.1f} (the 2 cores may be shared with other work: figures under load are slower than on a quiet machine).  
Models: the lecture's three ({results['checkpoint_note']}); the sections on one prediction and the load use `{results.get('model', '-')}`.
"""
    return "\n".join([machine, _render_latency(results), _render_server(results), _render_explain(results), _render_memory(results)])


def _render_latency(results: dict) -> str:
    lat = results["latency"]
    if failure_of(lat):
        return f"## One prediction\n\n{_failed('The measurement', failure_of(lat))}\n"
    rows = [[part, f"{v['p50_ms']:.2f}", f"{v['p99_ms']:.2f}", f"{v['mean_ms']:.2f}", str(v["n"])] for part, v in
            (("decode + preprocess + model", lat["whole"]), ("decode + preprocess", lat["preprocess"]), ("model", lat["model"]))]
    return f"""## One prediction

A real MNIST test digit drawn dark on a light 280x280 canvas, as PNG bytes (what the page sends), through
decoding, MNIST-style preprocessing and the model, in one thread (one PyTorch thread, as the server runs it);
{lat['whole']['n']} predictions over 50 different digits, {100 * lat['accuracy']:.0f}% of them read right.
Milliseconds:

{format_table(["part", "p50", "p99", "mean", "n"], rows, markdown=True)}
"""


def _render_server(results: dict) -> str:
    srv = results["server"]
    done = [s for s in srv if not failure_of(s)]
    srows = [[str(s["clients"]), f"{s['seconds']:.0f} s", f"{s['requests']:,}", f"{s['requests_per_s']:.0f}", f"{s['p50_ms']:.1f}",
              f"{s['p99_ms']:.1f}", str(s["errors"])] for s in done]
    failed = "".join("\n" + _failed(f"The load test with {s['clients']} client{'s' * (s['clients'] != 1)}", failure_of(s)) + "\n" for s in srv if failure_of(s))
    table = f"\n{format_table(['clients', 'for', 'requests', 'requests/s', 'p50', 'p99', 'errors'], srows, markdown=True)}\n" if done else ""
    return f"""## The server

`cnnlab serve` in its own process on 127.0.0.1 (uvicorn, one worker process; predictions in threads, at most
one per core); the clients are asyncio tasks with httpx in another process on the same 2 cores, each posting
a JSON data URL and waiting for the answer before the next. An error is any answer that is not 200 with the
right digit. Latency in milliseconds, as the clients see it:
{table}{failed}"""


def _render_explain(results: dict) -> str:
    done = [e for e in results["explain"] if not failure_of(e)]
    erows = [[e["model"], f"{e['p50_ms']:.1f}", f"{e['p90_ms']:.1f}", str(e["n"]), str(e["layers"]), str(e["parts"]),
              f"{e['answer_kb']:.0f}"] for e in done]
    failed = "".join(f"\n{_failed(e['model'], failure_of(e))}\n" for e in results["explain"] if failure_of(e))
    table = f"\n{format_table(['model', 'p50', 'p90', 'n', 'layers', 'parts', 'answer (kB)'], erows, markdown=True)}\n" if done else ""
    n = f"{done[0]['n']} requests each" if done else "the requests"
    return f"""## The inside view: /api/explain per model

`cnnlab serve` with the runs below; one client (httpx, same machine) posts the canvas PNGs raw to
`/api/explain?model=<id>` of each model in turn, {n} after 10 to warm up.
The time is the whole round trip as the page sees it: HTTP, decoding and preparing the picture, the network with
its hooks, and the JSON of every layer's maps (PNG atlases). CPU: {results['cpu']}. Milliseconds:
{table}{failed}"""


def _render_memory(results: dict) -> str:
    mem = results["memory"]
    if failure_of(mem):
        return f"## Memory under a burst of the largest pictures\n\n{_failed('The measurement', failure_of(mem))}\n"
    return f"""## Memory under a burst of the largest pictures

`cnnlab serve` with the same runs; {mem['clients']} clients (asyncio, httpx) post, for {mem['seconds']:.0f} s, the
largest pictures within the limits: {', '.join(mem['pictures'])}, each 16 MB once decoded. Answers:
{', '.join(f"{n:,} x {code}" for code, n in mem['answers'].items())}. The server process's resident memory:

{format_table(["at rest before", "peak during (VmHWM)", "2 s after"], [[f"{mem['rss_before_mb']:.0f} MB", f"{mem['peak_rss_mb']:.0f} MB", f"{mem['rss_after_mb']:.0f} MB"]], markdown=True)}

At most `workers` pictures (one per core) are decoded at once, each within the 16 MB budget, so the peak does not
grow with the number of clients; at most 32 image requests hold their bodies meanwhile (the app's IMAGE_REQUESTS),
each at most {mem.get('body_limit_mb', 5.4):.1f} MB (here about 25 kB each).
"""


def measure(results: dict, runs: list[str], images: list[tuple[bytes, int]], args: argparse.Namespace) -> None:
    """Each measurement into `results`, one after another; one that fails is recorded as {"failed": reason}
    (for the load tests and /api/explain, per clients count and per model) and the next goes on."""
    if not runs:
        nothing = "no model to serve: every training run failed"
        results["latency"], results["memory"] = {"failed": nothing}, {"failed": nothing}
        results["server"] = [{"clients": n, "failed": nothing} for n in args.clients]
        results["explain"] = [{"model": "every model", "failed": nothing}]
        return
    checkpoint = runs[0]
    measured, failed = attempt(_one_prediction, checkpoint, images, args.repeats)
    results["model"], results["latency"] = measured if measured else (checkpoint, {"failed": failed})
    print("latency", json.dumps(results["latency"]), flush=True)
    results["server"] = []
    for n in args.clients:
        load, failed = attempt(server_load, checkpoint, images, n, args.seconds)
        results["server"].append(load or {"clients": n, "failed": failed})
        print("server", json.dumps(results["server"][-1]), flush=True)
    explained, failed = attempt(explain_latency, runs, images, args.explain_repeats)
    results["explain"] = explained or [{"model": "every model (the server)", "failed": failed}]
    memory, failed = attempt(memory_under_load, runs, args.memory_clients, args.seconds)
    results["memory"] = {**memory, "body_limit_mb": BODY_LIMIT / 2**20} if memory else {"failed": failed}
    print("memory", json.dumps(results["memory"]), flush=True)


def _one_prediction(checkpoint: str, images: list[tuple[bytes, int]], repeats: int) -> tuple[str, dict]:
    """(the model's name, the latency of one prediction in this process)."""
    predictor = Predictor(load(checkpoint, "cpu"))
    return predictor.info["model"], latency(predictor, images, repeats)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--runs", nargs="+", help="run directories to serve, the first used for one prediction and the load "
                   "(default: train resnet, basic_cnn and inception_net for --train-epochs each)")
    p.add_argument("--train-epochs", type=int, default=1, help="epochs of each training; epochs, not a time budget, so "
                   "that the models are the same on a busy machine (default: 1)")
    p.add_argument("--clients", type=int, nargs="+", default=[1, 8], help="concurrent clients, one load test each (default: 1 8)")
    p.add_argument("--seconds", type=float, default=20.0, help="length of each load test (default: 20)")
    p.add_argument("--repeats", type=int, default=1000, help="predictions timed for the latency (default: 1000)")
    p.add_argument("--explain-repeats", type=int, default=300, help="/api/explain requests per model (default: 300)")
    p.add_argument("--memory-clients", type=int, default=16, help="clients of the memory test (default: 16)")
    p.add_argument("--out", default=str(HERE / "results"))
    args = p.parse_args()

    mnist = load_mnist(progress=False)
    with tempfile.TemporaryDirectory() as tmp:
        runs = args.runs
        note = "`" + "`, `".join(runs) + "`" if runs else ""
        if not runs:
            from cnnlab.train import fit, make_config

            trained = []
            for m in ("resnet", "basic_cnn", "inception_net"):
                r, failed = attempt(fit, make_config(m, epochs=args.train_epochs, device="cpu", seed=0), mnist, out_root=tmp,
                                    progress=False)
                trained.append((m, r, failed))
                if failed:
                    print(f"training {m}: failed: {failed}", flush=True)
            runs = [str(r.run_dir) for _, r, _ in trained if r]
            note = (f"{args.train_epochs}-epoch training runs made by the benchmark: "
                    + "; ".join(f"{m} failed: {failed}" if failed else f"{m} {100 * r.test_acc:.2f}% test accuracy"
                                for m, r, failed in trained))
        images = canvas_pngs(mnist)
        results = {"machine": describe_machine(), "cpu": cpu_kind(),
                   "command": "python " + " ".join(shlex.quote(a) for a in sys.argv),
                   "checkpoint_note": note, "load_average": [os.getloadavg()[0]]}
        measure(results, runs, images, args)
        results["load_average"].append(os.getloadavg()[0])
    write_results(args.out, "serve", results, render(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
