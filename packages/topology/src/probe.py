#!/usr/bin/env python3
"""RTT probe for @mtc/topology (Python 3 stdlib only), run inside a host's namespace.

  probe.py echo ADDR SECONDS      UDP echo on ADDR:<free port>; prints "ready PORT",
                                  runs until signalled, or SECONDS at most
  probe.py ping ADDR PORT COUNT INTERVAL_MS TIMEOUT_MS
                                  COUNT sequential UDP probes, each followed by a base
                                  probe the forwarder does not delay; prints JSON
                                  {"rtts": [...], "base": [...]} in ms (null for a probe
                                  without an answer)
  probe.py http URL TIMEOUT_MS    GET; prints the status code on the first line, then the body
  probe.py fetch HOST PORT PATH COUNT TIMEOUT_MS
                                  COUNT sequential GETs of PATH on one keep-alive
                                  connection (a new one after an error); one JSON line
                                  each: status (0: no answer), ms, headers, body, error
  probe.py stream HOST PORT PATH INTERVAL_MS DURATION_MS TIMEOUT_MS
                                  open loop: a GET every INTERVAL_MS for DURATION_MS, each
                                  on a connection of its own (a slow one does not hold up
                                  the next); one JSON line per answer as it ends: i, at
                                  (start, ms since the epoch), ms, status, code (the
                                  X-Mtc-Error header), bytes, error
"""

import http.client as httpclient
import json
import os
import select
import socket
import struct
import sys
import threading
import time
import urllib.error
import urllib.request

# Largest datagram echoed; probes are 16 bytes.
MAX_DATAGRAM = 2048


def echo(addr, seconds):
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind((addr, 0))
    print("ready %d" % s.getsockname()[1], flush=True)
    end = time.monotonic() + seconds
    while True:
        left = end - time.monotonic()
        if left <= 0:
            return 0
        readable, _, _ = select.select([s], [], [], left)
        if readable:
            data, peer = s.recvfrom(MAX_DATAGRAM)
            s.sendto(data, peer)


# Marks a base probe, which the forwarder does not delay (src/forwarder.py BASE_MARKER).
BASE_MARKER = b"mtc-topology-base"


def round_trip(s, payload, timeout_ms):
    """Sends payload and waits for it to come back: the RTT in ms, or None."""
    sent = time.monotonic()
    s.send(payload)
    deadline = sent + timeout_ms / 1000.0
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            return None
        readable, _, _ = select.select([s], [], [], left)
        if not readable:
            return None
        try:
            data = s.recv(MAX_DATAGRAM)
        except ConnectionRefusedError:
            continue
        # Late answers to earlier probes are skipped: each payload is unique.
        if data == payload:
            return round((time.monotonic() - sent) * 1000.0, 3)


# Nice value asked for (as root) while probing, as the forwarder's: the probe's own
# timestamps are part of the RTT.
NICENESS = -10


def ping(addr, port, count, interval_ms, timeout_ms):
    """Each probe is followed by a base probe on the same path without the pair's delay."""
    try:
        os.nice(NICENESS - os.nice(0))
    except OSError:
        pass  # not root: the probes are only less precise under load
    try:
        # Autogroup scheduling: the nice value counts only within the session's group
        # (spawned in a session of its own, see forwarder.py).
        if os.getsid(0) == os.getpid():
            with open("/proc/self/autogroup", "w") as f:
                f.write(str(NICENESS))
    except OSError:
        pass
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.connect((addr, port))
    rtts = []
    base = []
    for seq in range(count):
        stamp = struct.pack("!Qd", seq, time.monotonic())
        rtts.append(round_trip(s, stamp, timeout_ms))
        base.append(round_trip(s, BASE_MARKER + stamp, timeout_ms))
        if seq + 1 < count:
            time.sleep(interval_ms / 1000.0)
    print(json.dumps({"rtts": rtts, "base": base}), flush=True)
    return 0


def http(url, timeout_ms):
    # No proxy from the environment: the URL is inside the namespace.
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    try:
        with opener.open(url, timeout=timeout_ms / 1000.0) as res:
            status, body = res.status, res.read()
    except urllib.error.HTTPError as err:
        status, body = err.code, err.read()
    except (urllib.error.URLError, OSError) as err:
        print("0\n%s" % err, flush=True)
        return 1
    sys.stdout.write("%d\n" % status)
    sys.stdout.flush()
    sys.stdout.buffer.write(body)
    return 0


# Longest body text returned per answer (the rest is counted, not printed).
MAX_BODY_TEXT = 4096


def get(conn, path):
    """GET path on conn: the response and its whole body; raises what http.client raises."""
    conn.request("GET", path)
    res = conn.getresponse()
    return res, res.read()


def fetch(host, port, path, count, timeout_ms):
    conn = None
    for _ in range(count):
        if conn is None:
            conn = httpclient.HTTPConnection(host, port, timeout=timeout_ms / 1000.0)
        started = time.monotonic()
        try:
            res, body = get(conn, path)
            answer = {
                "status": res.status,
                "headers": {k.lower(): v for k, v in res.getheaders()},
                "body": body[:MAX_BODY_TEXT].decode("utf-8", "replace"),
                "bytes": len(body),
            }
            if res.will_close:
                conn.close()
                conn = None
        except (OSError, httpclient.HTTPException) as err:
            conn.close()
            conn = None
            answer = {"status": 0, "headers": {}, "body": "", "bytes": 0, "error": str(err)}
        answer["ms"] = round((time.monotonic() - started) * 1000.0, 3)
        print(json.dumps(answer), flush=True)
    if conn is not None:
        conn.close()
    return 0


def stream(host, port, path, interval_ms, duration_ms, timeout_ms):
    lock = threading.Lock()

    def one(i):
        at = time.time()
        started = time.monotonic()
        conn = httpclient.HTTPConnection(host, port, timeout=timeout_ms / 1000.0)
        try:
            res, body = get(conn, path)
            answer = {
                "status": res.status,
                "code": res.getheader("x-mtc-error") or "",
                "bytes": len(body),
            }
        except (OSError, httpclient.HTTPException) as err:
            answer = {"status": 0, "code": "", "bytes": 0, "error": str(err)}
        finally:
            conn.close()
        answer["i"] = i
        answer["at"] = round(at * 1000.0, 3)
        answer["ms"] = round((time.monotonic() - started) * 1000.0, 3)
        with lock:
            print(json.dumps(answer), flush=True)

    threads = []
    t0 = time.monotonic()
    i = 0
    while i * interval_ms <= duration_ms:
        left = t0 + i * interval_ms / 1000.0 - time.monotonic()
        if left > 0:
            time.sleep(left)
        t = threading.Thread(target=one, args=(i,), daemon=True)
        t.start()
        threads.append(t)
        i += 1
    for t in threads:
        t.join()
    return 0

def main():
    args = sys.argv[1:]
    if len(args) == 3 and args[0] == "echo":
        return echo(args[1], float(args[2]))
    if len(args) == 6 and args[0] == "ping":
        return ping(args[1], int(args[2]), int(args[3]), float(args[4]), float(args[5]))
    if len(args) == 6 and args[0] == "fetch":
        return fetch(args[1], int(args[2]), args[3], int(args[4]), float(args[5]))
    if len(args) == 7 and args[0] == "stream":
        return stream(
            args[1], int(args[2]), args[3], float(args[4]), float(args[5]), float(args[6])
        )
    if len(args) == 3 and args[0] == "http":
        return http(args[1], float(args[2]))
    print(__doc__, file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())
