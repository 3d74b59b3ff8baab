#!/usr/bin/env python3
"""Plan-write throughput through one or more `stackyard serve` replicas.

Starts the replicas itself (release binary), uploads one package per
selector, then has CLIENTS threads pin and unpin that artifact on their own
selectors through the replicas in turn for SECONDS, and prints writes/s and
the CPU each write cost the replicas and PostgreSQL (from /proc, over the
middle of the run), which do not depend on how fast this load generator is.

    bench/replica-writes.py --replicas 2 --database-url postgres://postgres@127.0.0.1/bench \
        --blob-store s3://bench --s3-endpoint http://127.0.0.1:5100
    bench/replica-writes.py --replicas 1          # the embedded default: SQLite, local disk
"""
import argparse, io, json, os, socket, subprocess, sys, tarfile, tempfile, threading, time

import requests

TOKEN = "sy_bench-admin-token-0123456789"


def free_port():
    s = socket.socket(); s.bind(("127.0.0.1", 0)); port = s.getsockname()[1]; s.close(); return port


def cpu_seconds(pids):
    """utime + stime of these processes, in seconds."""
    total = 0
    for pid in pids:
        try:
            fields = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
            total += int(fields[11]) + int(fields[12])
        except (FileNotFoundError, ProcessLookupError):
            pass
    return total / os.sysconf("SC_CLK_TCK")


def postgres_pids():
    out = subprocess.run(["pgrep", "-x", "postgres"], capture_output=True, text=True).stdout
    return [int(p) for p in out.split()]


def package(name):
    data = io.BytesIO()
    with tarfile.open(fileobj=data, mode="w:gz") as tar:
        manifest = json.dumps({"stack_name": name}).encode()
        info = tarfile.TarInfo("manifest.json"); info.size = len(manifest)
        tar.addfile(info, io.BytesIO(manifest))
    return data.getvalue()


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--replicas", type=int, default=1)
    p.add_argument("--clients", type=int, default=16)
    p.add_argument("--seconds", type=float, default=10)
    p.add_argument("--database-url")
    p.add_argument("--blob-store")
    p.add_argument("--s3-endpoint")
    p.add_argument("--pool", type=int, help="database_max_connections per replica")
    p.add_argument("--binary", default="target/release/stackyard")
    a = p.parse_args()

    env = dict(os.environ, STACKYARD_BOOTSTRAP_TOKEN=TOKEN, STACKYARD_LOG="warn",
               AWS_ACCESS_KEY_ID="bench", AWS_SECRET_ACCESS_KEY="bench")
    for k, v in [("STACKYARD_DATABASE_URL", a.database_url), ("STACKYARD_BLOB_STORE", a.blob_store),
                 ("STACKYARD_S3_ENDPOINT", a.s3_endpoint)]:
        if v:
            env[k] = v
    limits = tempfile.NamedTemporaryFile("w", suffix=".toml", delete=False)
    if a.pool:
        limits.write(f"database_max_connections = {a.pool}\n")
    limits.write("[limits]\nrequests_per_second = 1000000\nrequest_burst = 1000000\n"); limits.close()
    servers, urls = [], []
    for _ in range(a.replicas):
        port = free_port()
        data = tempfile.mkdtemp()
        servers.append(subprocess.Popen([a.binary, "serve", "--listen", f"127.0.0.1:{port}", "--data-dir", data,
                                         "--config", limits.name], env=env))
        urls.append(f"http://127.0.0.1:{port}")
    session = requests.Session(); session.headers["authorization"] = f"Bearer {TOKEN}"
    try:
        for url in urls:
            for _ in range(200):
                try:
                    if session.get(f"{url}/readyz", timeout=1).ok:
                        break
                except requests.ConnectionError:
                    pass
                time.sleep(0.05)
        names = [f"bench-{i}" for i in range(a.clients)]
        for name in names:
            presigned = session.post(f"{urls[0]}/presigned_url", json={}).json()
            requests.post(presigned["url"], data=presigned["fields"], files={"file": package(name)}).raise_for_status()
            session.post(f"{urls[0]}/uploads/{presigned['upload_id']}/complete").raise_for_status()
        counts = [0] * a.clients
        stop = time.monotonic() + a.seconds

        def client(i):
            s = requests.Session(); s.headers["authorization"] = f"Bearer {TOKEN}"
            selector, n = f"bench%2F{i}", 0
            while time.monotonic() < stop:
                url = urls[n % len(urls)]
                first = s.post(f"{url}/deployments/{selector}/artifact/{names[i]}")
                remove = s.delete(f"{url}/deployments/{selector}/artifact/{names[i]}")
                if first.status_code in (200, 201) and remove.status_code == 200:
                    counts[i] += 2
                n += 1

        threads = [threading.Thread(target=client, args=(i,)) for i in range(a.clients)]
        started = time.monotonic()
        for t in threads: t.start()
        # CPU over the middle half of the run, away from start-up and wind-down.
        time.sleep(a.seconds / 4)
        server_pids, pg = [s.pid for s in servers], postgres_pids()
        cpu0, pg0, writes0, t0 = cpu_seconds(server_pids), cpu_seconds(pg), sum(counts), time.monotonic()
        time.sleep(a.seconds / 2)
        cpu1, pg1, writes1, t1 = cpu_seconds(server_pids), cpu_seconds(pg), sum(counts), time.monotonic()
        for t in threads: t.join()
        elapsed = time.monotonic() - started
        total = sum(counts)
        middle = max(writes1 - writes0, 1)
        backend = "postgres" if a.database_url else "sqlite"
        print(json.dumps({"backend": backend, "replicas": a.replicas, "clients": a.clients, "pool": a.pool,
                          "writes": total, "seconds": round(elapsed, 2), "writes_per_second": round(total / elapsed, 1),
                          "replica_cores": round((cpu1 - cpu0) / (t1 - t0), 2),
                          "replica_cpu_ms_per_write": round((cpu1 - cpu0) * 1000 / middle, 2),
                          "postgres_cores": round((pg1 - pg0) / (t1 - t0), 2),
                          "postgres_cpu_ms_per_write": round((pg1 - pg0) * 1000 / middle, 2)}))
    finally:
        for s in servers:
            s.terminate()
        for s in servers:
            s.wait()


if __name__ == "__main__":
    sys.exit(main())
