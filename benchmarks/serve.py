"""Serving benchmark: the latency of one prediction, and the web server under concurrent clients.

    python benchmarks/serve.py                                  # trains a resnet for 30 s first
    python benchmarks/serve.py --checkpoint runs/<time>-resnet --clients 8 --seconds 20

1. One prediction, in this process: PNG bytes of a real MNIST test digit drawn dark on a light 280x280
   canvas (what the web page sends) -> decode and preprocess -> model -> probabilities; p50 and p99 over
   --repeats predictions, and the same for the two halves alone.
2. The server: `cnnlab serve` in its own process on 127.0.0.1; --clients concurrent clients (one asyncio
   task each, httpx) post such images as JSON data URLs for --seconds; requests/s, p50/p99 latency,
   errors (any answer that is not 200 with the right digit counts as one).

Writes serve.json and serve.md to --out (default benchmarks/results). Run it alone: the clients and the
server share the same cores.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import io
import json
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
from machine import describe_machine, write_results  # noqa: E402

from cnnlab.data import load_mnist  # noqa: E402
from cnnlab.inference.predictor import Predictor  # noqa: E402
from cnnlab.data.pictures import load_image, to_mnist  # noqa: E402
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


def server_load(checkpoint: str, images: list[tuple[bytes, int]], clients: int, seconds: float) -> dict:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen([sys.executable, "-m", "cnnlab", "serve", checkpoint, "--port", str(port)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        import httpx

        deadline = time.monotonic() + 60
        while True:
            try:
                if httpx.get(f"http://127.0.0.1:{port}/api/health", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"the server did not start: {proc.stderr.read().decode()[-2000:]}")
            time.sleep(0.2)
        bodies = [(json.dumps({"image": "data:image/png;base64," + base64.b64encode(d).decode()}), y) for d, y in images]
        asyncio.run(_load(f"http://127.0.0.1:{port}/api/predict", bodies[:10], 2, 2.0))  # warm-up
        return asyncio.run(_load(f"http://127.0.0.1:{port}/api/predict", bodies, clients, seconds))
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()


def render(results: dict) -> str:
    lat = results["latency"]
    rows = [[part, f"{v['p50_ms']:.2f}", f"{v['p99_ms']:.2f}", f"{v['mean_ms']:.2f}", str(v["n"])] for part, v in
            (("decode + preprocess + model", lat["whole"]), ("decode + preprocess", lat["preprocess"]), ("model", lat["model"]))]
    srv = results["server"]
    srows = [[str(s["clients"]), f"{s['seconds']:.0f} s", f"{s['requests']:,}", f"{s['requests_per_s']:.0f}", f"{s['p50_ms']:.1f}",
              f"{s['p99_ms']:.1f}", str(s["errors"])] for s in srv]
    return f"""# Serving: one prediction, and the server under load

Machine: {results['machine']}.  
Command: `{results['command']}` (run from the repository root, nothing else running).  
Model: `{results['model']}` from {results['checkpoint_note']}.

## One prediction

A real MNIST test digit drawn dark on a light 280x280 canvas, as PNG bytes (what the page sends), through
decoding, MNIST-style preprocessing and the model, in one thread (one PyTorch thread, as the server runs it);
{lat['whole']['n']} predictions over 50 different digits, {100 * lat['accuracy']:.0f}% of them read right.
Milliseconds:

{format_table(["part", "p50", "p99", "mean", "n"], rows, markdown=True)}

## The server

`cnnlab serve` in its own process on 127.0.0.1 (uvicorn, one worker process; predictions in threads, at most
one per core); the clients are asyncio tasks with httpx in another process on the same 2 cores, each posting
a JSON data URL and waiting for the answer before the next. An error is any answer that is not 200 with the
right digit. Latency in milliseconds, as the clients see it:

{format_table(["clients", "for", "requests", "requests/s", "p50", "p99", "errors"], srows, markdown=True)}
"""


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--checkpoint", help="a resnet checkpoint or run directory (default: train one for 30 s)")
    p.add_argument("--clients", type=int, nargs="+", default=[1, 8], help="concurrent clients, one load test each (default: 1 8)")
    p.add_argument("--seconds", type=float, default=20.0, help="length of each load test (default: 20)")
    p.add_argument("--repeats", type=int, default=1000, help="predictions timed for the latency (default: 1000)")
    p.add_argument("--out", default=str(HERE / "results"))
    args = p.parse_args()

    mnist = load_mnist(progress=False)
    with tempfile.TemporaryDirectory() as tmp:
        checkpoint = args.checkpoint
        note = f"`{checkpoint}`"
        if checkpoint is None:
            from cnnlab.train import fit, make_config

            result = fit(make_config("resnet", time_budget=30.0, device="cpu"), mnist, out_root=tmp, progress=False)
            checkpoint = str(result.run_dir)
            note = f"a 30 s `--time-budget` training run made by the benchmark ({100 * result.test_acc:.2f}% test accuracy)"
        predictor = Predictor(checkpoint)
        images = canvas_pngs(mnist)
        results = {"machine": describe_machine(), "command": "python " + " ".join(shlex.quote(a) for a in sys.argv),
                   "model": predictor.info["model"], "checkpoint_note": note}
        results["latency"] = latency(predictor, images, args.repeats)
        print("latency", json.dumps(results["latency"]), flush=True)
        results["server"] = []
        for n in args.clients:
            results["server"].append(server_load(checkpoint, images, n, args.seconds))
            print("server", json.dumps(results["server"][-1]), flush=True)
    write_results(args.out, "serve", results, render(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
