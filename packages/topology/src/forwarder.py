#!/usr/bin/env python3
"""User-space WAN emulator for @mtc/topology (Python 3 stdlib only).

Creates N TUN devices (wan-0 .. wan-<N-1>) in the network namespace it runs in; the
harness then moves device i into host i's namespace (the open file descriptor keeps
working across the move) and gives it 10.99.0.(i+1)/24. Every IPv4 packet host i sends
to another host of the subnet comes out of fd i here, is held for the pair's one-way
delay and written to the destination host's fd. TUN is layer 3: no ARP, no MACs, and
no checksum offload (the kernel hands over finished packets).

Control, one command per line on stdin, each answered by one line on stdout:
  delay I J MS   one-way delay from host I to host J in milliseconds (float)
  cut I          drop every packet from or to host I (also those already queued)
  restore I      undo cut
  stats          JSON counters
A UDP datagram whose payload starts with BASE_MARKER is held BASE_DELAY_MS only, whatever
the pair's delay and outside the pair's queue: the probes use such datagrams to measure
what the emulation itself costs (TUN, this loop and its timer waking late on a busy
machine, the probe), the base the pair's delay adds to.
An answer is "ok ..." or "error ...". EOF on stdin (the harness died) ends the program,
which closes the TUN devices, so they vanish with it.
"""

import fcntl
import heapq
import json
import os
import select
import struct
import sys
import time

TUNSETIFF = 0x400454CA
IFF_TUN = 0x0001
IFF_NO_PI = 0x1000

# Packets held at once over all pairs; beyond it new packets are dropped (tail drop), as
# a router's buffer would. 20,000 full-size packets are 30 MB, well above the
# bandwidth-delay product of any test (40 ms at 1 Gbit/s is ~3,400 packets).
MAX_QUEUED_PACKETS = 20_000
# Largest packet read from a TUN device (the devices' MTU is below it).
MAX_PACKET_BYTES = 65_535
# Packets read from one device per wake-up before looking at the others and the queue.
READ_BATCH = 64
# Longest sleep when nothing is queued (seconds): bounds how late a stdin command is
# noticed only if select misbehaves; select wakes on stdin anyway.
IDLE_WAIT_S = 1.0
# Nice value asked for (as root): a packet held past its due time is late by however long
# the scheduler keeps this process from running; on 2 busy cores that is tens of ms at
# nice 0. A network lives in the kernel; its stand-in gets precedence over the load.
NICENESS = -10
# Marks the probes' undelayed base datagrams (src/probe.py sends the same bytes).
BASE_MARKER = b"mtc-topology-base"
# A base datagram's one-way delay: short, but through the same timer as every other packet,
# so that it is late as they are. (src/constants.ts BASE_PROBE_RTT_MS is twice this.)
BASE_DELAY_MS = 0.5
UDP = 17


def is_base_probe(packet):
    """Whether packet is a UDP datagram carrying BASE_MARKER (IPv4, header length in IHL)."""
    if packet[9] != UDP:
        return False
    start = (packet[0] & 0x0F) * 4 + 8
    return packet[start : start + len(BASE_MARKER)] == BASE_MARKER


def open_tun(name):
    fd = os.open("/dev/net/tun", os.O_RDWR | os.O_NONBLOCK)
    ifr = struct.pack("16sH22x", name.encode(), IFF_TUN | IFF_NO_PI)
    fcntl.ioctl(fd, TUNSETIFF, ifr)
    return fd


def raise_priority():
    try:
        os.nice(NICENESS - os.nice(0))
    except OSError:
        pass  # not root: the emulation is only less precise under load
    # With autogroup scheduling a nice value only counts within the session's group, and
    # every group weighs as nice 0: a session of its own whose group gets the niceness.
    # (It ends when its stdin closes, as before; a terminal's Ctrl-C no longer reaches it.)
    try:
        os.setsid()
        with open("/proc/self/autogroup", "w") as f:
            f.write(str(NICENESS))
    except OSError:
        pass  # no autogroup, or not root: plain nice is all there is


def main():
    if len(sys.argv) != 3:
        print("usage: forwarder.py N SUBNET_PREFIX (e.g. 4 10.99.0.)", file=sys.stderr)
        return 2
    n = int(sys.argv[1])
    prefix = bytes(int(x) for x in sys.argv[2].strip(".").split("."))
    if len(prefix) != 3 or not 1 <= n <= 250:
        print("forwarder: bad arguments", file=sys.stderr)
        return 2
    raise_priority()
    fds = [open_tun("wan-%d" % i) for i in range(n)]
    index_of_fd = {fd: i for i, fd in enumerate(fds)}
    delay = [[0.0] * n for _ in range(n)]  # one-way, seconds
    last_due = [[0.0] * n for _ in range(n)]  # keeps each pair FIFO when its delay drops
    cut = [False] * n
    queue = []  # heap of (due, seq, src, dst, packet)
    seq = 0
    stats = {"forwarded": 0, "dropped_full": 0, "dropped_cut": 0, "dropped_other": 0,
             "write_errors": 0, "max_queued": 0, "max_late_ms": 0.0}
    stdin = sys.stdin.fileno()
    os.set_blocking(stdin, False)
    pending = b""
    sys.stdout.write("ready\n")
    sys.stdout.flush()

    def command(line):
        parts = line.split()
        try:
            if parts[0] == "delay" and len(parts) == 4:
                i, j, ms = int(parts[1]), int(parts[2]), float(parts[3])
                if not (0 <= i < n and 0 <= j < n and 0 <= ms <= 60_000):
                    return "error out of range"
                delay[i][j] = ms / 1000.0
                return "ok"
            if parts[0] in ("cut", "restore") and len(parts) == 2:
                i = int(parts[1])
                if not 0 <= i < n:
                    return "error out of range"
                cut[i] = parts[0] == "cut"
                return "ok"
            if parts[0] == "stats":
                return "ok " + json.dumps(dict(stats, queued=len(queue)))
        except (ValueError, IndexError):
            pass
        return "error bad command"

    while True:
        now = time.monotonic()
        timeout = IDLE_WAIT_S if not queue else max(0.0, queue[0][0] - now)
        readable, _, _ = select.select(fds + [stdin], [], [], timeout)
        for fd in readable:
            if fd == stdin:
                chunk = os.read(stdin, 65536)
                if not chunk:
                    return 0
                pending += chunk
                while b"\n" in pending:
                    line, pending = pending.split(b"\n", 1)
                    if line.strip():
                        sys.stdout.write(command(line.decode()) + "\n")
                sys.stdout.flush()
                continue
            src = index_of_fd[fd]
            for _ in range(READ_BATCH):
                try:
                    packet = os.read(fd, MAX_PACKET_BYTES)
                except BlockingIOError:
                    break
                arrived = time.monotonic()
                # IPv4 only, destination inside the subnet and not the sender itself.
                if len(packet) < 20 or packet[0] >> 4 != 4 or packet[16:19] != prefix:
                    stats["dropped_other"] += 1
                    continue
                dst = packet[19] - 1
                if not 0 <= dst < n or dst == src:
                    stats["dropped_other"] += 1
                    continue
                if cut[src] or cut[dst]:
                    stats["dropped_cut"] += 1
                    continue
                if len(queue) >= MAX_QUEUED_PACKETS:
                    stats["dropped_full"] += 1
                    continue
                if is_base_probe(packet):
                    due = arrived + BASE_DELAY_MS / 1000.0
                else:
                    due = max(arrived + delay[src][dst], last_due[src][dst])
                    last_due[src][dst] = due
                seq += 1
                heapq.heappush(queue, (due, seq, src, dst, packet))
                if len(queue) > stats["max_queued"]:
                    stats["max_queued"] = len(queue)
        now = time.monotonic()
        while queue and queue[0][0] <= now:
            due, _, src, dst, packet = heapq.heappop(queue)
            if cut[src] or cut[dst]:
                stats["dropped_cut"] += 1
                continue
            late_ms = (now - due) * 1000.0
            if late_ms > stats["max_late_ms"]:
                stats["max_late_ms"] = round(late_ms, 3)
            try:
                os.write(fds[dst], packet)
                stats["forwarded"] += 1
            except OSError:
                stats["write_errors"] += 1


if __name__ == "__main__":
    try:
        sys.exit(main())
    except KeyboardInterrupt:
        sys.exit(0)
