"""The HTTP service under load: requests/s, latency per endpoint and resident memory, with the
model calls serialised by a lock (``--batch-max-size 1``, the former service) and with dynamic
batching (the default), in one run on one machine.

What it does, by itself, then stops:

1. Makes an SQLite store for the shipped model with 10,000 speakers: 40 real speakers of
   speechocean762 enrolled from their recordings, the rest filler speakers with random unit
   embeddings (two each), so that every ``/identify`` scores 10,000 speaker means.
2. For each service setting, starts ``speakerprint serve`` on 127.0.0.1 (a subprocess, one
   worker), warms it up, then drives it with 1, 4, 16 and 64 concurrent clients, each level a
   bounded number of requests: a fixed mix of /embed (40%), /identify (30%), /verify (20%) and
   /enroll (10%) of real recordings (speechocean762 speakers kept out of the store, 1.5-6 s).
   Then a long run at 16 clients. The service's resident memory (VmRSS) is read at start, after
   warm-up and at the end of the long run.
3. Writes the tables (markdown) with the command and the machine.

The client is httpx's asyncio client in the same machine: its CPU time competes with the
service's on the same cores, equally for both settings.

    PYTHONPATH=src python bench/serve_load.py --out bench/serve_load.md
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import shlex
import socket
import sqlite3
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

import httpx
import numpy as np
from _machine import describe

from speakerprint.audio import load_audio
from speakerprint.inference import SpeakerEncoder
from speakerprint.inference.speech import DEFAULT_MIN_SPEECH_S, speech_seconds
from speakerprint.inference.store import open_store

SPEECH = Path(__file__).resolve().parents[2] / "shared" / "data" / "speechocean762" / "train"
MIX = [("embed", 0.4), ("identify", 0.3), ("verify", 0.2), ("enroll", 0.1)]
LEVELS = (1, 4, 16, 64)
SERIAL = "serial lock"


def _speakers(root: Path) -> list[list[Path]]:
    folders = sorted(p for p in root.iterdir() if p.is_dir())
    return [sorted(f.glob("*.opus")) for f in folders]


def build_store(db: Path, encoder: SpeakerEncoder, speakers: list[list[Path]], total: int) -> None:
    rng = np.random.default_rng(0)
    with open_store(
        db, model_fingerprint=encoder.fingerprint, embed_dim=encoder.embed_dim, create=True
    ) as store:
        for files in speakers:
            name = files[0].parent.name
            embs = [encoder.embed(f) for f in files[:3]]
            store.enroll(name, embs, model_fingerprint=encoder.fingerprint)
        for i in range(total - len(speakers)):
            filler = rng.standard_normal((2, encoder.embed_dim)).astype(np.float32)
            store.enroll(f"filler-{i:05d}", filler, model_fingerprint=encoder.fingerprint)


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"no VmRSS for process {pid}")


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process (all its threads), from /proc."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def forward_costs(
    encoder: SpeakerEncoder, files: list[Path]
) -> list[tuple[int, int, float, float]]:
    """(threads, batch size, wall ms, CPU ms) per recording of the model's forward passes alone
    over ``files``, sorted by length and cut into batches (batch 1: ``embed`` one at a time)."""
    import torch

    wavs = sorted((load_audio(f, encoder.sample_rate) for f in files), key=len)
    rows = []
    threads_before = torch.get_num_threads()
    for threads in (1, 2):
        torch.set_num_threads(threads)
        for batch in (1, 4, 8):
            groups = [wavs[i : i + batch] for i in range(0, len(wavs), batch)]
            run = (
                (lambda: [encoder.embed(w) for w in wavs])
                if batch == 1
                else (lambda g=groups: [encoder.embed_batch(x) for x in g])
            )
            run()  # warm
            wall, cpu = time.perf_counter(), time.process_time()
            run()
            wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
            rows.append((threads, batch, 1000 * wall / len(wavs), 1000 * cpu / len(wavs)))
    torch.set_num_threads(threads_before)
    return rows


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Service:
    """``speakerprint serve`` in a subprocess, for one setting."""

    def __init__(self, db: Path, batch_max_size: int, log: Path) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.command = [
            sys.executable, "-m", "speakerprint", "serve", "--db", str(db),
            "--port", str(self.port), "--batch-max-size", str(batch_max_size),
            "--log-level", "warning",
        ]  # fmt: skip
        self._log = open(log, "ab")  # noqa: SIM115 - closed in stop()
        self.process = subprocess.Popen(self.command, stdout=self._log, stderr=self._log)
        deadline = time.monotonic() + 120
        while True:
            if self.process.poll() is not None:
                raise RuntimeError(f"the service exited with {self.process.returncode}: see {log}")
            try:
                if httpx.get(f"{self.url}/health", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError("the service did not start in 120 s")
            time.sleep(0.2)

    def settled_rss_mb(self, probe: tuple[str, bytes]) -> float:
        """Resident memory once the load has stopped: after a second's pause, one /embed lets the
        service give its free heap back (it does so at most once a second, after a forward
        pass), so the figure is what it holds, not what it freed a moment ago."""
        time.sleep(1.2)
        r = httpx.post(f"{self.url}/embed", files={"audio": probe}, timeout=60)
        r.raise_for_status()
        return rss_mb(self.process.pid)

    def peak_rss_mb(self) -> float:
        for line in Path(f"/proc/{self.process.pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
        raise RuntimeError(f"no VmHWM for process {self.process.pid}")

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait(30)
        self._log.close()


class Load:
    """Request bodies: the real recordings of speakers not in the store, read once."""

    def __init__(self, files: list[Path], seed: int) -> None:
        self.bodies = [(f.name, f.read_bytes()) for f in files]
        self.rng = random.Random(seed)
        self.enrolled = 0

    def next_request(self) -> tuple[str, dict, dict]:
        kinds, weights = zip(*MIX, strict=True)
        kind = self.rng.choices(kinds, weights)[0]
        one = self.rng.choice(self.bodies)
        if kind == "verify":
            return kind, {"a": one, "b": self.rng.choice(self.bodies)}, {}
        if kind == "enroll":
            self.enrolled += 1
            return kind, {"audio": one}, {"name": f"load-{self.enrolled:06d}"}
        return kind, {"audio": one}, {}


async def drive(url: str, load: Load, clients: int, requests: int) -> dict:
    """``requests`` requests from ``clients`` concurrent clients; latencies per endpoint."""
    latencies: dict[str, list[float]] = defaultdict(list)
    errors: dict[str, int] = defaultdict(int)
    sent = 0

    async def client(http: httpx.AsyncClient) -> None:
        nonlocal sent
        while sent < requests:
            sent += 1
            kind, files, data = load.next_request()
            start = time.perf_counter()
            try:
                r = await http.post(f"/{kind}", files=files, data=data)
                ok = r.status_code == 200
            except httpx.HTTPError:
                ok = False
            latencies[kind].append(time.perf_counter() - start)
            if not ok:
                errors[kind] += 1

    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)
    async with httpx.AsyncClient(base_url=url, timeout=300, limits=limits) as http:
        start = time.perf_counter()
        await asyncio.gather(*(client(http) for _ in range(clients)))
        wall = time.perf_counter() - start
    return {
        "wall_s": wall,
        "requests": requests,
        "latencies": dict(latencies),
        "errors": dict(errors),
    }


def _ms(values: list[float], q: float) -> str:
    return f"{1000 * float(np.quantile(values, q)):.0f}" if values else "-"


def _table(results: dict) -> list[str]:
    lines = [
        "| setting | clients | requests | req/s | service CPU ms/request | endpoint | p50 ms | p95 ms "
        "| p99 ms | errors |",
        "|---|---:|---:|---:|---:|---|---:|---:|---:|---:|",
    ]
    for setting, levels in results.items():
        for clients, r in levels.items():
            rps = r["requests"] / r["wall_s"]
            every = [x for v in r["latencies"].values() for x in v]
            rows = [("all", every, sum(r["errors"].values()))]
            rows += [(k, r["latencies"].get(k, []), r["errors"].get(k, 0)) for k, _ in MIX]
            for i, (endpoint, lat, err) in enumerate(rows):
                head = (
                    f"| {setting} | {clients} | {r['requests']} | {rps:.1f} "
                    f"| {r['cpu_ms'] / r['requests']:.0f}"
                    if i == 0
                    else "| | | | |"
                )
                lines.append(
                    f"{head} | {endpoint} | {_ms(lat, 0.5)} | {_ms(lat, 0.95)} | "
                    f"{_ms(lat, 0.99)} | {err} |"
                )
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--speech", type=Path, default=SPEECH)
    parser.add_argument("--speakers", type=int, default=10_000, help="speakers in the store")
    parser.add_argument("--requests", type=int, default=240, help="requests per client level")
    parser.add_argument("--long-requests", type=int, default=1500, help="the long run at 16")
    parser.add_argument("--warmup", type=int, default=100)
    parser.add_argument(
        "--batch-sizes",
        default="1,16",
        help="the --batch-max-size of each service setting, compared at 16 clients to the first",
    )
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    sizes = [int(b) for b in args.batch_sizes.split(",")]
    settings = {
        (
            SERIAL
            if b == 1
            else f"dynamic batching, max {b}"
            if len(sizes) > 2
            else "dynamic batching"
        ): b
        for b in sizes
    }

    speakers = _speakers(args.speech)
    enrolled, visitors = speakers[:40], speakers[40:]
    # Queries with under the service's minimum of speech would be refused (422): left out.
    query_files = [
        f
        for files in visitors
        for f in files[:4]
        if speech_seconds(load_audio(f, 16000), 16000) >= DEFAULT_MIN_SPEECH_S + 0.2
    ]
    encoder = SpeakerEncoder.from_pretrained(None)
    results: dict[str, dict] = {}
    memory: dict[str, tuple[float, float, float]] = {}
    long_runs: dict[str, dict] = {}
    peaks: dict[str, float] = {}
    with tempfile.TemporaryDirectory(prefix="serve-load-") as tmp:
        tmp = Path(tmp)
        start = time.perf_counter()
        build_store(tmp / "template.db", encoder, enrolled, args.speakers)
        print(f"store of {args.speakers} speakers in {time.perf_counter() - start:.0f} s")
        for setting, batch in settings.items():
            db = tmp / f"{batch}.db"
            with sqlite3.connect(tmp / "template.db") as src, sqlite3.connect(db) as dst:
                src.backup(dst)  # each setting starts from the same store
            service = Service(db, batch, tmp / "service.log")
            try:
                at_start = rss_mb(service.process.pid)
                load = Load(query_files, seed=1)
                asyncio.run(drive(service.url, load, 4, args.warmup))
                results[setting] = {}
                for clients in LEVELS:
                    cpu_before = cpu_seconds(service.process.pid)
                    r = asyncio.run(drive(service.url, load, clients, args.requests))
                    r["cpu_ms"] = 1000 * (cpu_seconds(service.process.pid) - cpu_before)
                    results[setting][clients] = r
                    print(f"{setting}: {clients} clients {args.requests / r['wall_s']:.1f} req/s")
                # Warm: every level served, then a run at the long run's 16 clients.
                asyncio.run(drive(service.url, load, 16, args.warmup))
                warm = service.settled_rss_mb(load.bodies[0])
                long_runs[setting] = asyncio.run(drive(service.url, load, 16, args.long_requests))
                memory[setting] = (at_start, warm, service.settled_rss_mb(load.bodies[0]))
                peaks[setting] = service.peak_rss_mb()
                print(f"{setting}: memory {memory[setting]}")
            finally:
                service.stop()

    costs = forward_costs(encoder, query_files[:48])
    first, *others = settings
    serial = results[first][16]

    def rps(r: dict) -> float:
        return r["requests"] / r["wall_s"]

    def p99(r: dict) -> str:
        return _ms([x for v in r["latencies"].values() for x in v], 0.99)

    command = "PYTHONPATH=src python bench/serve_load.py " + " ".join(
        shlex.quote(a) for a in sys.argv[1:]
    )
    lines = [
        "# The HTTP service under load",
        "",
        f"Command: `{command}` ({time.strftime('%Y-%m-%d')}).",
        f"Machine: {describe()}; load at the end: {os.getloadavg()[0]:.2f}.",
        "",
        f"`speakerprint serve` (one worker, the shipped ECAPA C512, SQLite store of "
        f"{args.speakers:,} speakers), on 127.0.0.1, driven by httpx's asyncio client on the same "
        f"machine. Mix: " + ", ".join(f"/{k} {w:.0%}" for k, w in MIX) + "; real speechocean762 "
        "recordings of speakers not in the store. `serial lock` is `--batch-max-size 1` (each "
        "request's forward pass alone, model calls taking turns on a lock, as before dynamic "
        "batching); `dynamic batching` is the default (`--batch-max-size 16 --batch-wait-ms 5`). "
        "Latency is the client's, from sending the request to reading the whole response.",
        "",
        *[
            f"At 16 clients {other} serves **{rps(results[other][16]) / rps(serial):.2f}x** the "
            f"requests/s of the {first}; p99 {p99(results[other][16])} ms against {p99(serial)} ms."
            for other in others
        ],
        "",
        *_table(results),
        "",
        f"## Memory (VmRSS of the service, MiB), long run of {args.long_requests} requests at 16 "
        "clients",
        "",
        "At start: the service has answered /health only. After warm-up: it has served "
        f"{args.warmup} requests at 4 clients, every level above, and {args.warmup} more at 16 "
        "clients (its heap has reached its working size). After the long run: the same service "
        "once the long run is over. Both are read after a second's pause and one more /embed, "
        "after which the service returns its free heap (it does so at most once a second, after "
        "a forward pass): what it holds, not what it freed a moment earlier. Peak: the "
        "process's high-water mark (VmHWM) over the whole run.",
        "",
        "| setting | at start | after warm-up | after the long run | change | peak | long run req/s | errors |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for setting, (at_start, warm, end) in memory.items():
        run = long_runs[setting]
        lines.append(
            f"| {setting} | {at_start:.0f} | {warm:.0f} | {end:.0f} | {100 * (end / warm - 1):+.1f}% "
            f"| {peaks[setting]:.0f} | {run['requests'] / run['wall_s']:.1f} "
            f"| {sum(run['errors'].values())} |"
        )
    lines += [
        "",
        "## The forward pass alone",
        "",
        "Why batching gains little here: on this CPU a batch does not make the model's work per "
        "recording smaller. The shipped model on 48 of the query recordings, sorted by length "
        "and cut into batches (padding masked), in this process, without the service:",
        "",
        "| torch threads | batch | wall ms per recording | CPU ms per recording |",
        "|---:|---:|---:|---:|",
        *[f"| {t} | {b} | {w:.1f} | {c:.1f} |" for t, b, w, c in costs],
        "",
        "The service's own CPU per request is in the first table: the forward passes are most of "
        "it, and the rest (HTTP, form parsing, decoding and resampling, the speech check, JSON) "
        "does not shrink with batching either.",
    ]
    text = "\n".join(lines) + "\n"
    print(text)
    if args.out is not None:
        args.out.write_text(text)


if __name__ == "__main__":
    main()
