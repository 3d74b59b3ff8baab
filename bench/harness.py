#!/usr/bin/env python3
"""Stackyard's benchmarks, measured side by side in one run, and BENCHMARKS.md.

Each figure that has a target is a ratio of two things measured in the same
run on the same machine (absolute times drift on shared machines):

  1. reads      GET /deployments/{selector} (20-artifact plans, N deployments
                stored) vs GET /healthz on the same server, under wrk
  2. query      GET /deployments?artifact_keys=K (50 matches) with 1,000 vs N
                deployments stored
  3. plans      POST /deployments with 1,000- vs 10,000-artifact plans
                (~3 dependencies each)
  4. writes     single-artifact add/remove on 1,000 selectors, SQLite and
                PostgreSQL (writes/s)
  5. upload     a package of UPLOAD bytes through the presigned POST vs `cp`
                of the same file on the same disk vs `curl` to a sink that
                discards it; the server's peak RSS growth
  6. startup    time to /readyz ok with N deployments stored
  7. memory     RSS idle (empty) and with N deployments stored

    bench/run                  # full size: N = 100,000, UPLOAD = 1 GiB; rewrites BENCHMARKS.md
    bench/run --smoke          # small sizes, quick; prints, writes nothing unless --write
    bench/harness.py --binary target/debug/stackyard --smoke    # what CI runs

Results are printed as JSON lines and, with --write, rendered into
BENCHMARKS.md (never edit its figures by hand: run this again).
"""
import argparse, concurrent.futures, datetime, io, json, os, platform, random, re, shutil, socket
import statistics, subprocess, sys, tarfile, tempfile, threading, time

import requests

TOKEN = "sy_bench-admin-token-0123456789"
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PROBE = "probe"           # the artifact key the query benchmark looks for
PROBE_MATCHES = 50
PLAN_SIZE = 20            # artifacts per deployment in the read benchmarks
POOL = 400                # artifacts those plans are drawn from
ALL_SCENARIOS = "reads,plans,writes,upload"


# ---- servers -----------------------------------------------------------------

def free_port():
    s = socket.socket(); s.bind(("127.0.0.1", 0)); port = s.getsockname()[1]; s.close(); return port


def session():
    s = requests.Session(); s.headers["authorization"] = f"Bearer {TOKEN}"; return s


class Server:
    """`stackyard serve` on a data dir of its own (kept across restarts)."""

    def __init__(self, binary, data_dir, database_url=None):
        self.binary, self.data_dir, self.database_url = binary, data_dir, database_url
        self.config = os.path.join(data_dir, "bench.toml")
        os.makedirs(data_dir, exist_ok=True)
        with open(self.config, "w") as f:
            f.write("max_body_size = \"64MiB\"\n[limits]\nrequests_per_second = 10000000\n"
                    "request_burst = 10000000\nmax_query_values = 100000\n")
        self.process = None

    def start(self):
        """Starts it; returns the seconds until /readyz answered ok."""
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        env = dict(os.environ, STACKYARD_BOOTSTRAP_TOKEN=TOKEN, STACKYARD_LOG="warn")
        if self.database_url:
            env["STACKYARD_DATABASE_URL"] = self.database_url
        started = time.monotonic()
        self.process = subprocess.Popen(
            [self.binary, "serve", "--listen", f"127.0.0.1:{self.port}", "--data-dir", self.data_dir,
             "--config", self.config], env=env, stdout=subprocess.DEVNULL)
        while True:
            try:
                if requests.get(f"{self.url}/readyz", timeout=1).ok:
                    return time.monotonic() - started
            except requests.ConnectionError:
                pass
            if self.process.poll() is not None:
                sys.exit(f"the server exited with {self.process.returncode}")
            time.sleep(0.01)

    def stop(self):
        if self.process and self.process.poll() is None:
            self.process.terminate(); self.process.wait()

    def rss(self, field="VmRSS"):
        """Resident memory (or VmHWM: its peak) in bytes."""
        for line in open(f"/proc/{self.process.pid}/status"):
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024
        raise RuntimeError(field)


def postgres_database(admin_url):
    """A fresh database on the PostgreSQL server of `admin_url`; None if unreachable."""
    name = f"stackyard_bench_{random.randrange(1 << 32):08x}"
    result = subprocess.run(["psql", admin_url, "-qc", f"CREATE DATABASE {name}"], capture_output=True, text=True)
    if result.returncode != 0:
        print(f"# PostgreSQL skipped: {result.stderr.strip()}", file=sys.stderr)
        return None, None
    return admin_url.rsplit("/", 1)[0] + "/" + name, name


def drop_database(admin_url, name):
    subprocess.run(["psql", admin_url, "-qc", f"DROP DATABASE IF EXISTS {name} WITH (FORCE)"], capture_output=True)


# ---- data ---------------------------------------------------------------------

def package(name, depends_on=(), filler=b""):
    data = io.BytesIO()
    with tarfile.open(fileobj=data, mode="w") as tar:
        for path, body in [("manifest.json", json.dumps({"stack_name": name, "depends_on": list(depends_on)}).encode()),
                           ("main.tf", filler or f"# {name}\n".encode())]:
            info = tarfile.TarInfo(path); info.size = len(body); tar.addfile(info, io.BytesIO(body))
    return data.getvalue()


def upload(s, url, name, depends_on=()):
    presigned = s.post(f"{url}/presigned_url", json={}).json()
    response = s.post(presigned["url"], data=presigned["fields"], files={"file": package(name, depends_on)})
    response.raise_for_status()


def parallel(function, items, workers=8):
    """Calls function(session, item) for every item on `workers` threads."""
    local = threading.local()

    def call(item):
        if not hasattr(local, "s"):
            local.s = session()
        return function(local.s, item)

    with concurrent.futures.ThreadPoolExecutor(workers) as pool:
        return list(pool.map(call, items))


def plan_keys(i, n):
    """Deployment i's 20 artifacts: PROBE in exactly PROBE_MATCHES of the n deployments."""
    names = [f"pool-{k:04d}" for k in random.Random(i).sample(range(POOL), PLAN_SIZE)]
    every = max(n // PROBE_MATCHES, 1)
    if i % every == 0 and i // every < PROBE_MATCHES:
        names[-1] = PROBE
    return names


def selector(i):
    return f"fleet/{i:06d}"


def load_deployments(server, n, workers=8):
    """Uploads the pool and writes n deployments through the API; returns deployments/s."""
    parallel(lambda s, name: upload(s, server.url, name), [f"pool-{k:04d}" for k in range(POOL)] + [PROBE], workers)
    started = time.monotonic()

    def write(s, i):
        body = {"selector": selector(i),
                "deployment_plan": {"artifacts": [{"artifact_key": k} for k in plan_keys(i, n)]}}
        response = s.post(f"{server.url}/deployments", json=body)
        if response.status_code != 201:
            raise RuntimeError(f"{response.status_code} {response.text}")

    parallel(write, range(n), workers)
    return n / (time.monotonic() - started)


# ---- load generation ---------------------------------------------------------

WRK_SCRIPT = """
local n = %d
wrk.headers["Authorization"] = "Bearer %s"
request = function()
  return wrk.format("GET", string.format("/deployments/fleet%%%%2F%%06d", math.random(0, n - 1)))
end
"""


def wrk(url, seconds, path="/", script=None, connections=16):
    """Requests/s and latency percentiles (ms) from wrk on 2 threads."""
    command = ["wrk", "-t2", f"-c{connections}", f"-d{seconds}s", "--latency",
               "-H", f"Authorization: Bearer {TOKEN}"]
    if script:
        command += ["-s", script]
    out = subprocess.run(command + [url + path], capture_output=True, text=True, check=True).stdout
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))
    percentiles = {}
    for p, value, unit in re.findall(r"^\s+(\d+)%\s+([\d.]+)(us|ms|s)\s*$", out, re.M):
        percentiles[int(p)] = float(value) * {"us": 0.001, "ms": 1, "s": 1000}[unit]
    non_2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    if non_2xx:
        sys.exit(f"wrk saw {non_2xx.group(1)} failed responses from {path}:\n{out}")
    return {"rps": rps, "p50_ms": percentiles.get(50), "p99_ms": percentiles.get(99)}


def in_turns(seconds, targets, rounds=2):
    """wrk on each (url, path, script) in turn, `rounds` times, `seconds` in
    all for each, so that drift on a shared machine touches them alike: per
    target its mean requests/s and p50, and its worst round's p99."""
    runs = [[] for _ in targets]
    for _ in range(rounds):
        for i, (url, path, script) in enumerate(targets):
            runs[i].append(wrk(url, max(seconds // rounds, 1), path, script))
    return [{"rps": round(statistics.mean(r["rps"] for r in rs), 2),
             "p50_ms": round(statistics.mean(r["p50_ms"] for r in rs), 3),
             "p99_ms": max(r["p99_ms"] for r in rs)} for rs in runs]


def timed(function, repeat):
    """Median and all times (ms) of `repeat` calls."""
    times = []
    for i in range(repeat):
        started = time.perf_counter(); function(i); times.append((time.perf_counter() - started) * 1000)
    return statistics.median(times), times


# ---- scenarios -----------------------------------------------------------------

def reads_and_memory(a, work, results):
    """Scenarios 1, 2, 6 and 7 on one server holding N deployments."""
    small = Server(a.binary, os.path.join(work, "small"))
    small.start()
    idle = small.rss()
    load_deployments(small, 1000)
    query = f"/deployments?artifact_keys={PROBE}&limit=50"
    assert len(session().get(small.url + query).json()["deployments"]) == PROBE_MATCHES
    # Kept running (idle) to be measured in turns with the big one.

    big = Server(a.binary, os.path.join(work, "big"))
    big.start()
    rate = load_deployments(big, a.deployments)
    results.append({"scenario": "load", "deployments": a.deployments, "deployments_per_second": round(rate)})
    print(json.dumps(results[-1]), flush=True)
    big.stop()
    startup = big.start()   # start-up with N stored, then let it settle
    time.sleep(1)
    loaded_rss = big.rss()
    script = os.path.join(work, "reads.lua")
    with open(script, "w") as f:
        f.write(WRK_SCRIPT % (a.deployments, TOKEN))
    assert len(session().get(f"{big.url}/deployments/fleet%2F000000").json()["artifacts"]) == PLAN_SIZE
    # A short pass first, so both are measured in the steady state: the
    # database's pages read once, every connection open.
    wrk(big.url, min(a.seconds, 3), "/", script)
    health, reads = in_turns(a.seconds, [(big.url, "/healthz", None), (big.url, "/", script)])
    assert len(session().get(big.url + query).json()["deployments"]) == PROBE_MATCHES
    small_query, big_query = in_turns(a.seconds, [(small.url, query, None), (big.url, query, None)])
    big.stop()
    small.stop()

    results.append({"scenario": "reads", "deployments": a.deployments, "healthz_rps": health["rps"],
                    "deployment_rps": reads["rps"], "ratio": round(reads["rps"] / health["rps"], 3),
                    "deployment_p99_ms": reads["p99_ms"], "healthz_p99_ms": health["p99_ms"]})
    print(json.dumps(results[-1]), flush=True)
    results.append({"scenario": "query", "small": 1000, "big": a.deployments,
                    "small_p50_ms": small_query["p50_ms"], "big_p50_ms": big_query["p50_ms"],
                    "small_rps": small_query["rps"], "big_rps": big_query["rps"],
                    "ratio": round(big_query["p50_ms"] / small_query["p50_ms"], 3)})
    print(json.dumps(results[-1]), flush=True)
    results.append({"scenario": "startup", "deployments": a.deployments, "seconds_to_ready": round(startup, 3)})
    print(json.dumps(results[-1]), flush=True)
    results.append({"scenario": "memory", "idle_rss_mib": round(idle / 2**20, 1),
                    "loaded_rss_mib": round(loaded_rss / 2**20, 1), "deployments": a.deployments})
    print(json.dumps(results[-1]), flush=True)


def big_plans(a, work, results):
    """Scenario 3: plan writes of 1,000 and 10,000 artifacts with ~3 dependencies each."""
    server = Server(a.binary, os.path.join(work, "plans"))
    server.start()
    sizes = [a.plan_small, a.plan_big]
    rng = random.Random(3)
    deps = {i: sorted(rng.sample(range(max(0, i - 50), i), min(3, i))) for i in range(sizes[-1])}
    name = lambda i: f"stack-{i:05d}"
    parallel(lambda s, i: upload(s, server.url, name(i), [name(d) for d in deps[i]]), range(sizes[-1]))
    s = session()
    medians = {}
    for size in sizes:
        artifacts = [{"artifact_key": name(i)} for i in range(size)]

        def write(run):
            body = {"selector": f"plans/{size}/{run}", "deployment_plan": {"artifacts": artifacts}}
            response = s.post(f"{server.url}/deployments", json=body)
            assert response.status_code == 201, response.text

        write(-1)   # warm up
        medians[size], _ = timed(write, a.plan_runs)
    server.stop()
    results.append({"scenario": "plans", "small": sizes[0], "big": sizes[1],
                    "small_median_ms": round(medians[sizes[0]], 2), "big_median_ms": round(medians[sizes[1]], 2),
                    "ratio": round(medians[sizes[1]] / medians[sizes[0]], 3), "runs": a.plan_runs})
    print(json.dumps(results[-1]), flush=True)


def writes(a, work, results):
    """Scenario 4: concurrent single-artifact add/remove on 1,000 selectors."""
    backends = [("sqlite", None, None)]
    if not a.skip_postgres:
        url, name = postgres_database(a.postgres)
        if url:
            backends.append(("postgres", url, name))
    for backend, url, name in backends:
        server = Server(a.binary, os.path.join(work, f"writes-{backend}"), url)
        try:
            server.start()
            upload(session(), server.url, "base")
            upload(session(), server.url, "addon", ["base"])
            # Every selector holds base; the clients add and remove addon.
            parallel(lambda s, i: s.post(f"{server.url}/deployments", json={
                "selector": f"w/{i}", "deployment_plan": {"artifacts": [{"artifact_key": "base"}]}}).raise_for_status(),
                range(a.selectors))
            counts, stop = [0] * a.clients, time.monotonic() + a.seconds

            def client(c):
                # Each client has selectors of its own (c, c + clients, ...): no two race.
                s, n, mine = session(), 0, range(c, a.selectors, a.clients)
                while time.monotonic() < stop:
                    sel = f"w%2F{mine[n % len(mine)]}"
                    added = s.post(f"{server.url}/deployments/{sel}/artifact/addon")
                    removed = s.delete(f"{server.url}/deployments/{sel}/artifact/addon")
                    assert added.status_code == 200 and removed.status_code == 200, (added.text, removed.text)
                    counts[c] += 2; n += 1

            threads = [threading.Thread(target=client, args=(c,)) for c in range(a.clients)]
            started = time.monotonic()
            for t in threads: t.start()
            for t in threads: t.join()
            elapsed = time.monotonic() - started
            results.append({"scenario": "writes", "backend": backend, "selectors": a.selectors,
                            "clients": a.clients, "writes_per_second": round(sum(counts) / elapsed, 1)})
            print(json.dumps(results[-1]), flush=True)
        finally:
            server.stop()
            if name:
                drop_database(a.postgres, name)


SINK = """
import socket
s = socket.socket(); s.bind(("127.0.0.1", 0)); s.listen(4)
print(s.getsockname()[1], flush=True)
while True:
    c, _ = s.accept(); head = b""
    while b"\\r\\n\\r\\n" not in head:
        head += c.recv(65536)
    head, body = head.split(b"\\r\\n\\r\\n", 1)
    length = int(next(l.split(b":")[1] for l in head.split(b"\\r\\n") if l.lower().startswith(b"content-length")))
    left, buf = length - len(body), bytearray(1 << 20)
    while left > 0:
        left -= c.recv_into(buf)
    c.sendall(b"HTTP/1.1 200 OK\\r\\nContent-Length: 0\\r\\nConnection: close\\r\\n\\r\\n"); c.close()
"""


def uploads(a, work, results):
    """Scenario 5: a large package through the presigned POST vs cp vs curl to a sink."""
    path = os.path.join(work, "big.tar")
    with open(path, "wb") as f:
        manifest = json.dumps({"stack_name": "big"}).encode()
        tar = tarfile.TarInfo("manifest.json"); tar.size = len(manifest)
        f.write(tar.tobuf(format=tarfile.USTAR_FORMAT) + manifest + b"\0" * (512 - len(manifest) % 512))
        body = tarfile.TarInfo("main.tf"); body.size = a.upload_bytes
        f.write(body.tobuf(format=tarfile.USTAR_FORMAT))
        chunk = os.urandom(1 << 20)
        for _ in range(a.upload_bytes >> 20):
            f.write(chunk)
        f.write(b"\0" * 1024)
    size = os.path.getsize(path)
    subprocess.run(["sync"], check=True)

    def cp():
        target = os.path.join(work, "copy.tar")
        started = time.perf_counter()
        subprocess.run(["cp", path, target], check=True)
        # The server makes its copy durable before answering; so must cp.
        subprocess.run(["sync", target], check=True)
        elapsed = time.perf_counter() - started
        os.remove(target)
        return elapsed

    sink = subprocess.Popen([sys.executable, "-c", SINK], stdout=subprocess.PIPE, text=True)
    port = int(sink.stdout.readline())

    def curl_sink():
        started = time.perf_counter()
        subprocess.run(["curl", "-s", "-o", "/dev/null", "-H", "Expect:", "-T", path, f"http://127.0.0.1:{port}/sink"], check=False)
        return time.perf_counter() - started

    server = Server(a.binary, os.path.join(work, "upload"))
    server.start()
    upload(session(), server.url, "warm-up")
    rss_before = server.rss("VmHWM")

    def stackyard():
        s = session()
        presigned = s.post(f"{server.url}/presigned_url", json={"content_length": size}).json()
        form = []
        for k, v in presigned["fields"].items():
            form += ["-F", f"{k}={v}"]
        started = time.perf_counter()
        result = subprocess.run(["curl", "-s", "-o", "/dev/null", "-H", "Expect:", "-w", "%{http_code}", *form, "-F", f"file=@{path}",
                                 presigned["url"]], capture_output=True, text=True)
        elapsed = time.perf_counter() - started
        assert result.stdout == "204", result.stdout
        version = s.get(f"{server.url}/artifacts/big").json()["latest_version"]
        s.delete(f"{server.url}/artifacts/big/versions/{version}").raise_for_status()
        return elapsed

    # The best of three each, taken in turns so that drift touches all three alike.
    runs = {"cp": [], "curl_sink": [], "stackyard": []}
    for _ in range(3):
        for name, function in [("cp", cp), ("curl_sink", curl_sink), ("stackyard", stackyard)]:
            runs[name].append(function())
    times = {name: min(seconds) for name, seconds in runs.items()}
    growth = server.rss("VmHWM") - rss_before
    server.stop(); sink.kill()
    os.remove(path)
    mib_s = {k: size / v / 2**20 for k, v in times.items()}
    results.append({"scenario": "upload", "bytes": size, "cp_mib_s": round(mib_s["cp"]),
                    "curl_sink_mib_s": round(mib_s["curl_sink"]), "stackyard_mib_s": round(mib_s["stackyard"]),
                    "ratio_to_cp": round(mib_s["stackyard"] / mib_s["cp"], 3),
                    "ratio_to_curl_sink": round(mib_s["stackyard"] / mib_s["curl_sink"], 3),
                    "peak_rss_growth_mib": round(growth / 2**20, 1)})
    print(json.dumps(results[-1]), flush=True)


# ---- report ---------------------------------------------------------------------

def machine():
    model = next((l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name")), "?")
    memory = next(int(l.split()[1]) for l in open("/proc/meminfo") if l.startswith("MemTotal")) / 2**20
    disk = subprocess.run(["df", "-h", "--output=source,fstype", ROOT], capture_output=True, text=True).stdout.split("\n")[1]
    return f"{os.cpu_count()} cores ({model}), {memory:.0f} GiB, Linux {platform.release()}, disk {' '.join(disk.split())}"


def verdict(ok):
    return "met" if ok else "**missed**"


def render(results, a):
    by = {}
    for r in results:
        by.setdefault(r["scenario"], []).append(r)
    commit = subprocess.run(["git", "-C", ROOT, "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip()
    lines = [
        "# Benchmarks",
        "",
        "Generated by `bench/run` (`bench/harness.py`); do not edit the figures by hand, run it again.",
        "Every target is a ratio of two measurements taken side by side in the same run, since",
        "absolute times drift on shared machines. The load generator (wrk, Python) runs on the",
        "same machine as the server and takes part of its CPU. The sides of each comparison run",
        "in turns (reads and queries: two rounds each, after a warm-up pass; uploads: the best",
        "of three each), so drift touches them alike.",
        "",
        f"- Run: {datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC, commit `{commit}`, "
        f"release build, embedded default (SQLite, local disk) unless named",
        f"- Machine: {machine()}",
        f"- Sizes: {a.deployments:,} deployments of {PLAN_SIZE} artifacts; plans of {a.plan_small:,} and "
        f"{a.plan_big:,} artifacts; a {a.upload_bytes / 2**20:,.0f} MiB package; wrk runs of {a.seconds} s, "
        "2 threads, 16 connections",
        "",
        "| # | what | measured | target | |",
        "| --- | --- | --- | --- | --- |",
    ]
    if "reads" in by:
        r = by["reads"][0]
        lines.append(f"| 1 | `GET /deployments/{{selector}}` vs `GET /healthz`, {r['deployments']:,} stored | "
                     f"{r['deployment_rps']:,.0f} vs {r['healthz_rps']:,.0f} req/s: **{r['ratio']:.2f}**; "
                     f"p99 {r['deployment_p99_ms']:.2f} ms | >= 0.5; p99 < 5 ms | "
                     f"{verdict(r['ratio'] >= 0.5 and r['deployment_p99_ms'] < 5)} |")
    if "query" in by:
        r = by["query"][0]
        lines.append(f"| 2 | `GET /deployments?artifact_keys=K` ({PROBE_MATCHES} matches), {r['big']:,} vs "
                     f"{r['small']:,} stored | p50 {r['big_p50_ms']:.2f} vs {r['small_p50_ms']:.2f} ms: "
                     f"**{r['ratio']:.2f}** | <= 1.5 | {verdict(r['ratio'] <= 1.5)} |")
    if "plans" in by:
        r = by["plans"][0]
        lines.append(f"| 3 | `POST /deployments`, {r['big']:,} vs {r['small']:,} artifacts (median of {r['runs']}) | "
                     f"{r['big_median_ms']:.1f} vs {r['small_median_ms']:.1f} ms: **{r['ratio']:.2f}** | "
                     f"<= 12; {r['small']:,} under 50 ms | {verdict(r['ratio'] <= 12 and r['small_median_ms'] < 50)} |")
    for r in by.get("writes", []):
        lines.append(f"| 4 | single-artifact add/remove, {r['selectors']:,} selectors, {r['clients']} clients, "
                     f"{r['backend']} | **{r['writes_per_second']:,.0f} writes/s** | reported | |")
    if "upload" in by:
        r = by["upload"][0]
        lines.append(f"| 5 | presigned POST of {r['bytes'] / 2**20:,.0f} MiB vs `cp` (+`sync`) vs `curl` to a sink | "
                     f"{r['stackyard_mib_s']:,} vs {r['cp_mib_s']:,} vs {r['curl_sink_mib_s']:,} MiB/s: "
                     f"**{r['ratio_to_cp']:.2f}** of cp; peak RSS +{r['peak_rss_growth_mib']} MiB | "
                     f">= 0.7 of cp; <= 64 MiB | {verdict(r['ratio_to_cp'] >= 0.7 and r['peak_rss_growth_mib'] <= 64)} |")
    if "startup" in by:
        r = by["startup"][0]
        lines.append(f"| 6 | start-up to `/readyz` ok, {r['deployments']:,} stored | **{r['seconds_to_ready']:.2f} s** "
                     "| reported | |")
    if "memory" in by:
        r = by["memory"][0]
        lines.append(f"| 7 | RSS idle (empty) / with {r['deployments']:,} stored | **{r['idle_rss_mib']} / "
                     f"{r['loaded_rss_mib']} MiB** | reported | |")
    if "load" in by:
        r = by["load"][0]
        lines += ["", f"Loading the {r['deployments']:,} deployments through the API (8 clients) ran at "
                      f"{r['deployments_per_second']:,} plan writes/s."]
    lines += ["", "## How to run", "", "```sh",
              "bench/run                 # everything at full size (about 15 minutes); rewrites BENCHMARKS.md",
              "bench/run --smoke         # small sizes, a minute or two; prints only",
              "bench/run --only reads,plans --deployments 20000",
              "```", "",
              "`bench/run` builds the release binary and installs wrk (Debian) when missing. PostgreSQL for",
              "the write benchmark is `--postgres` (default `postgres://postgres@127.0.0.1:5432/test`, where",
              "a database is created and dropped); `--skip-postgres` leaves it out.", "",
              "## Raw results", "", "```json"] + [json.dumps(r) for r in results] + ["```", ""]
    return "\n".join(lines)


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--binary", default=os.path.join(ROOT, "target/release/stackyard"))
    p.add_argument("--smoke", action="store_true", help="small sizes: a quick check that every benchmark runs")
    p.add_argument("--only", default=ALL_SCENARIOS)
    p.add_argument("--deployments", type=int)
    p.add_argument("--upload-mib", type=int)
    p.add_argument("--seconds", type=int)
    p.add_argument("--postgres", default="postgres://postgres@127.0.0.1:5432/test")
    p.add_argument("--skip-postgres", action="store_true")
    p.add_argument("--write", action="store_true",
                   help="rewrite BENCHMARKS.md (the default for a full run of every scenario)")
    p.add_argument("--json", help="also write the results to this file")
    a = p.parse_args()
    a.deployments = a.deployments or (1000 if a.smoke else 100_000)
    a.upload_bytes = (a.upload_mib or (32 if a.smoke else 1024)) * 2**20
    a.seconds = a.seconds or (2 if a.smoke else 10)
    a.plan_small, a.plan_big = (100, 1000) if a.smoke else (1000, 10_000)
    a.plan_runs = 3 if a.smoke else 7
    a.selectors, a.clients = 1000, 16
    if shutil.which("wrk") is None and "reads" in a.only:
        sys.exit("wrk is not installed: apt-get install wrk (bench/run does)")
    results = []
    work = tempfile.mkdtemp(prefix="stackyard-bench-", dir=os.environ.get("BENCH_DIR", ROOT))
    try:
        for name in a.only.split(","):
            {"reads": reads_and_memory, "plans": big_plans, "writes": writes, "upload": uploads}[name](a, work, results)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    if a.json:
        with open(a.json, "w") as f:
            json.dump(results, f, indent=1)
    everything = set(a.only.split(",")) == set(ALL_SCENARIOS.split(","))
    if a.write or (everything and not a.smoke):
        with open(os.path.join(ROOT, "BENCHMARKS.md"), "w") as f:
            f.write(render(results, a))
        print("# BENCHMARKS.md rewritten", file=sys.stderr)
    else:
        print(render(results, a))


if __name__ == "__main__":
    main()
