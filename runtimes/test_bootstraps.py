#!/usr/bin/env python3
"""Standalone tests for the VoltRun runtime bootstraps (stdlib only).

Spawns runtimes/python/bootstrap.py and runtimes/node/bootstrap.js the way the engine does
(fd 0 = /dev/null, fd 1 = fd 2 = one log pipe, fd 3 = control in, fd 4 = control out) and
speaks the framed JSON protocol of docs/RUNTIME_PROTOCOL.md to them.

    python3 runtimes/test_bootstraps.py [name-substring ...]
"""
import fcntl
import json
import os
import resource
import secrets
import select
import shutil
import struct
import subprocess
import sys
import tempfile
import textwrap
import time
import traceback

HERE = os.path.dirname(os.path.abspath(__file__))
PY_BOOTSTRAP = os.path.join(HERE, "python", "bootstrap.py")
NODE_BOOTSTRAP = os.path.join(HERE, "node", "bootstrap.js")
WAIT = 30.0  # generous: the machine may be busy compiling


def new_marker():
    """A marker as the engine makes them: fresh for every init and every run."""
    return "\x1evoltrun:" + secrets.token_hex(16) + "\x1e"


class Instance:
    """One bootstrap process wired like the engine wires it."""

    def __init__(self, runtime, code, handler="handler", preexec=None, node_args=(), extra_files=None,
                 module=None, deps=None, opt=None, spare=False):
        """module: a package's module (then `code` is None and extra_files is the package, the
        entry its root); deps/opt: files of the dependency tree and the layers, in directories
        named by VOLTRUN_DEPS_ROOT / VOLTRUN_OPT_ROOT."""
        self.dir = tempfile.mkdtemp(prefix="voltrun-rt-")
        self.module = module
        if module:
            self.entry = self.dir
        else:
            entry_name = "lambda_function.py" if runtime == "python" else "index.js"
            self.entry = os.path.join(self.dir, entry_name)
            with open(self.entry, "w") as f:
                f.write(textwrap.dedent(code))
        self.deps_dir = tempfile.mkdtemp(prefix="voltrun-rt-deps-")
        self.opt_dir = tempfile.mkdtemp(prefix="voltrun-rt-opt-")
        for root, files in ((self.dir, extra_files), (self.deps_dir, deps), (self.opt_dir, opt)):
            for name, text in (files or {}).items():
                path = os.path.join(root, name)
                os.makedirs(os.path.dirname(path), exist_ok=True)
                with open(path, "w") as f:
                    f.write(textwrap.dedent(text))
        self.marker = new_marker()  # init's; each invoke brings its own
        self.handler = handler
        self.logbuf = b""

        ctl_in_r, self.ctl_in_w = os.pipe()
        self.ctl_out_r, ctl_out_w = os.pipe()
        self.log_r, log_w = os.pipe()

        def child_setup():
            # Move the child ends out of the way first so the dup2s cannot clobber each other.
            a = fcntl.fcntl(ctl_in_r, fcntl.F_DUPFD, 100)
            b = fcntl.fcntl(ctl_out_w, fcntl.F_DUPFD, 100)
            os.dup2(a, 3)
            os.dup2(b, 4)
            if preexec:
                preexec()

        if runtime == "python":
            cmd = ["python3", "-u", PY_BOOTSTRAP]
        else:
            cmd = ["node", *node_args, NODE_BOOTSTRAP]
        env = dict(os.environ, PYTHONUNBUFFERED="1", AWS_LAMBDA_FUNCTION_NAME="f", MY_VAR="x",
                   VOLTRUN_DEPS_ROOT=self.deps_dir, VOLTRUN_OPT_ROOT=self.opt_dir,
                   NODE_PATH=os.path.join(self.opt_dir, "nodejs", "node_modules"))
        if spare:
            env["VOLTRUN_SPARE"] = "1"
        self.proc = subprocess.Popen(cmd, cwd=self.dir, stdin=subprocess.DEVNULL, stdout=log_w,
                                     stderr=log_w, pass_fds=(3, 4), preexec_fn=child_setup, env=env)
        for fd in (ctl_in_r, ctl_out_w, log_w):
            os.close(fd)

    # -- control channel --
    def send(self, msg):
        data = json.dumps(msg).encode()
        os.write(self.ctl_in_w, struct.pack(">I", len(data)) + data)

    def _read_exact(self, n, deadline):
        buf = b""
        while len(buf) < n:
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([self.ctl_out_r], [], [], left)[0]:
                raise AssertionError("timed out waiting for a control frame")
            chunk = os.read(self.ctl_out_r, n - len(buf))
            if not chunk:
                raise AssertionError(f"control out EOF (exit status {self.proc.poll()})")
            buf += chunk
        return buf

    def recv(self, timeout=WAIT):
        deadline = time.monotonic() + timeout
        (n,) = struct.unpack(">I", self._read_exact(4, deadline))
        return json.loads(self._read_exact(n, deadline))

    # -- log pipe --
    def logs_until_marker(self, marker=None, timeout=WAIT):
        deadline = time.monotonic() + timeout
        m = (marker or self.marker).encode()
        while m not in self.logbuf:
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([self.log_r], [], [], left)[0]:
                raise AssertionError(f"timed out waiting for the marker; logs so far: {self.logbuf[-2000:]!r}")
            chunk = os.read(self.log_r, 1 << 16)
            if not chunk:
                raise AssertionError(f"log EOF before marker; logs: {self.logbuf[-2000:]!r}")
            self.logbuf += chunk
        before, self.logbuf = self.logbuf.split(m, 1)
        return before.decode()

    def rest_of_logs(self, timeout=WAIT):
        """Everything left on the log pipe up to EOF (all writers gone)."""
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([self.log_r], [], [], left)[0]:
                raise AssertionError("timed out waiting for log EOF")
            chunk = os.read(self.log_r, 1 << 16)
            if not chunk:
                out, self.logbuf = self.logbuf.decode(), b""
                return out
            self.logbuf += chunk

    # -- protocol helpers --
    def init(self, version=3, memory=128):
        self.send({"type": "init", "entry": self.entry, "module": self.module, "handler": self.handler,
                   "function_name": "f", "function_version": version, "memory_limit_in_mb": memory,
                   "marker": self.marker})
        return self.recv()

    def start(self):
        reply = self.init()
        assert reply == {"type": "ready"}, reply
        return self

    def invoke(self, event, timeout_ms=30000, request_id=None):
        """Returns (result frame, logs of this run)."""
        request_id = request_id or "ex_" + secrets.token_hex(8)
        marker = self.last_marker = new_marker()
        self.send({"type": "invoke", "request_id": request_id, "event": event, "timeout_ms": timeout_ms,
                   "marker": marker})
        logs = self.logs_until_marker(marker)  # the run's marker is written before the result frame
        res = self.recv()
        eq(res.get("request_id"), request_id)  # every result frame names its run
        return res, logs

    def ok(self, event=None, **kw):
        res, logs = self.invoke(event, **kw)
        assert res.get("type") == "result" and res.get("ok") is True, res
        return res["output"], logs

    def fail(self, event=None, **kw):
        res, logs = self.invoke(event, **kw)
        assert res.get("type") == "result" and res.get("ok") is False, res
        assert set(res["error"]) == {"type", "message", "stack"}, res
        return res["error"], logs

    def wait(self, timeout=WAIT):
        return self.proc.wait(timeout)

    def close(self):
        """EOF on control in: the bootstrap must exit 0 without printing anything."""
        os.close(self.ctl_in_w)
        self.ctl_in_w = None
        return self.wait()

    def cleanup(self):
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        for fd in (self.ctl_in_w, self.ctl_out_r, self.log_r):
            if fd is not None:
                os.close(fd)
        for d in (self.dir, self.deps_dir, self.opt_dir):
            shutil.rmtree(d, ignore_errors=True)


TESTS = []
_live = []


def test(fn):
    TESTS.append(fn)
    return fn


def inst(*a, **kw):
    i = Instance(*a, **kw)
    _live.append(i)
    return i


def eq(a, b):
    assert a == b, f"{a!r} != {b!r}"


def expect_init_error(i, *fragments):
    reply = i.init()
    eq(reply.get("type"), "init_error")
    err = reply["error"]
    eq(err["type"], "RuntimeError")
    for frag in fragments:
        assert frag in err["message"] + err["stack"], (frag, err)
    i.logs_until_marker()  # the marker was written
    eq(i.wait(), 1)
    return err


def expect_clean_exit(i):
    eq(i.close(), 0)
    eq(i.rest_of_logs(), "")


BIG = "x" * (5 * 1024 * 1024)

# ----------------------------------------------------------------------------------------- Python


@test
def a_spare_says_it_started_before_init_and_its_function_never_sees_the_variable():
    for runtime, code in (("python", "import os\ndef handler(e, c):\n    return os.environ.get('VOLTRUN_SPARE')\n"),
                          ("node", "exports.handler = async () => process.env.VOLTRUN_SPARE ?? null;")):
        i = inst(runtime, code, spare=True)
        eq(i.recv(), {"type": "started"})
        i.start()
        eq(i.ok({})[0], None)
        plain = inst(runtime, code).start()  # no variable: no frame before ready
        eq(plain.ok({})[0], None)


@test
def py_two_arg_handler():
    i = inst("python", """
        def handler(event, context):
            return {"got": event, "n": None}
    """).start()
    eq(i.ok({"a": [1, 2.5, "é✓😀"]}), ({"got": {"a": [1, 2.5, "é✓😀"]}, "n": None}, ""))
    expect_clean_exit(i)


@test
def py_one_arg_and_custom_handler_name():
    i = inst("python", """
        def main(event):
            return event * 2
        def handler(event, context, extra):
            raise AssertionError("wrong handler")
    """, handler="main").start()
    eq(i.ok(21)[0], 42)
    i2 = inst("python", "def handler(event, *, flag=1):\n    return [event, flag]\n").start()
    eq(i2.ok("e")[0], ["e", 1])
    i3 = inst("python", "def handler(*args):\n    return len(args)\n").start()
    eq(i3.ok("e")[0], 2)


@test
def py_async_handler_and_persistent_loop():
    i = inst("python", """
        import asyncio
        queue = None
        async def handler(event, context):
            global queue
            if queue is None:
                queue = asyncio.Queue()  # bound to the loop on first use
            await queue.put(event)
            await asyncio.sleep(0.01)
            return await queue.get()
    """).start()
    for n in range(3):
        eq(i.ok(n)[0], n)


@test
def py_context_fields_and_remaining_time():
    i = inst("python", """
        import time
        def handler(event, context):
            r1 = context.get_remaining_time_in_millis()
            time.sleep(event)
            r2 = context.get_remaining_time_in_millis()
            return {k: getattr(context, k) for k in ("function_name", "function_version",
                    "aws_request_id", "request_id", "memory_limit_in_mb", "invoked_function_arn",
                    "log_group_name", "log_stream_name")} | {"r1": r1, "r2": r2}
    """).start()
    out, _ = i.ok(0.05, timeout_ms=5000, request_id="ex_123")
    assert 4000 < out["r1"] <= 5000 and out["r2"] <= out["r1"] - 40, out
    eq(out["function_name"], "f")
    eq(out["function_version"], "3")
    eq(out["aws_request_id"], "ex_123")
    eq(out["request_id"], "ex_123")
    eq(out["memory_limit_in_mb"], 128)
    eq(out["invoked_function_arn"], "arn:voltrun:lambda:local:000000000000:function:f")
    eq(out["log_group_name"], "/voltrun/f")
    assert isinstance(out["log_stream_name"], str) and "[3]" in out["log_stream_name"], out
    out, _ = i.ok(0.05, timeout_ms=10)
    eq(out["r2"], 0)  # never negative


@test
def py_module_state_survives():
    i = inst("python", """
        print("loading")
        counter = 0
        def handler(event, context):
            global counter
            counter += 1
            return counter
    """).start()
    out, logs = i.ok()
    eq((out, logs), (1, "loading\n"))  # module-level output precedes the first run's marker
    eq(i.ok(), (2, ""))
    eq(i.ok(), (3, ""))


@test
def py_logs_in_order_with_child_process():
    i = inst("python", """
        import subprocess, sys
        def handler(event, context):
            print("before")
            subprocess.run(["echo", "child"], check=True)
            print("after")
            sys.stderr.write("err\\n")
            sys.stdout.write("no newline")
            return "done"
    """).start()
    for _ in range(2):
        eq(i.ok(), ("done", "before\nchild\nafter\nerr\nno newline"))
    expect_clean_exit(i)


@test
def py_control_fds_not_inherited():
    i = inst("python", """
        import os
        def handler(event, context):
            os.system("for f in 3 4 5 6 7 8 9 10; do [ -e /proc/$$/fd/$f ] && echo open$f; done; echo ok")
    """).start()
    eq(i.ok(), (None, "ok\n"))


@test
def py_user_closes_stdout():
    i = inst("python", """
        import os, sys
        def handler(event, context):
            if event == 1:
                print("last words")
                sys.stdout.close()
                os.close(1)
                os.close(2)
            return event
    """).start()
    eq(i.ok(1), (1, "last words\n"))
    eq(i.ok(2), (2, ""))


@test
def py_handler_error():
    i = inst("python", """
        def helper():
            raise ValueError("bad")
        def handler(event, context):
            if event == "plain":
                raise RuntimeError()
            helper()
    """).start()
    err, _ = i.fail()
    eq(err["type"], "HandlerError")
    eq(err["message"], "ValueError: bad")
    assert err["stack"].startswith("Traceback") and "in helper" in err["stack"], err
    assert "lambda_function.py" in err["stack"] and "bootstrap.py" not in err["stack"], err
    assert err["stack"].rstrip().endswith("ValueError: bad"), err
    eq(i.fail("plain")[0]["message"], "RuntimeError")
    i = inst("python", """
        class Weird(Exception):
            def __str__(self):
                raise TypeError("no str for you")
        def handler(event, context):
            raise Weird()
    """).start()
    eq(i.fail()[0]["message"], "Weird: <exception str() failed>")


@test
def py_async_handler_error():
    i = inst("python", """
        import asyncio
        async def handler(event, context):
            await asyncio.sleep(0)
            raise KeyError("k")
    """).start()
    err, _ = i.fail()
    eq((err["type"], err["message"]), ("HandlerError", "KeyError: 'k'"))
    assert "asyncio" not in err["stack"] and "lambda_function.py" in err["stack"], err


@test
def py_system_exit_and_keyboard_interrupt():
    i = inst("python", """
        import sys, asyncio
        async def aexit():
            sys.exit(4)
        def handler(event, context):
            if event == "exit":
                sys.exit(3)
            if event == "aexit":
                return aexit()
            if event == "int":
                raise KeyboardInterrupt
            return "alive"
    """).start()
    eq(i.fail("exit")[0]["message"], "SystemExit: 3")
    eq(i.fail("int")[0]["message"], "KeyboardInterrupt")
    eq(i.fail("aexit")[0]["message"], "SystemExit: 4")
    eq(i.ok()[0], "alive")


@test
def py_init_errors():
    err = expect_init_error(inst("python", "def handler(event, context)\n    return 1\n"), "SyntaxError")
    assert "lambda_function.py" in err["message"] + err["stack"], err
    expect_init_error(inst("python", "def other(e, c):\n    pass\n"), "Handler 'handler' missing")
    expect_init_error(inst("python", "handler = 5\n"), "not callable")
    expect_init_error(inst("python", "import no_such_module_xyz\n"), "ModuleNotFoundError", "no_such_module_xyz")
    i = inst("python", "print('partial')\nraise ValueError('at import')\n")
    reply = i.init()
    eq(reply["type"], "init_error")
    assert "ValueError: at import" in reply["error"]["message"], reply
    eq(i.logs_until_marker(), "partial\n")
    eq(i.wait(), 1)
    expect_init_error(inst("python", "import sys\nsys.exit(0)\n"), "SystemExit")


@test
def py_sibling_module_import():
    i = inst("python", "import helper\ndef handler(e, c):\n    return helper.VALUE\n",
             extra_files={"helper.py": "VALUE = 'from sibling'\n"}).start()
    eq(i.ok()[0], "from sibling")


@test
def py_unserialisable_result():
    i = inst("python", """
        def handler(event, context):
            return {"set": {1, 2}} if event == "set" else float("nan") if event == "nan" else "fine"
    """).start()
    for ev in ("set", "nan"):
        err, _ = i.fail(ev)
        eq(err["type"], "RuntimeError")
        assert "not JSON serializable" in err["message"], err
    eq(i.ok()[0], "fine")


@test
def py_memory_error():
    limit = 256 * 1024 * 1024
    i = inst("python", """
        def handler(event, context):
            if event == "big":
                blob = b"x" * (1024 * 1024 * 1024)
                return len(blob)
            return "still here"
    """, preexec=lambda: resource.setrlimit(resource.RLIMIT_AS, (limit, limit))).start()
    err, _ = i.fail("big")
    eq(err["type"], "OutOfMemory")
    assert "MemoryError" in err["message"], err
    eq(i.ok()[0], "still here")


@test
def py_big_event_round_trip():
    i = inst("python", "def handler(event, context):\n    return event\n").start()
    out, _ = i.ok({"blob": BIG, "n": 1})
    assert out == {"blob": BIG, "n": 1}


@test
def py_eof_clean_exit():
    expect_clean_exit(inst("python", "def handler(e, c):\n    return 1\n").start())
    i = inst("python", "def handler(e, c):\n    return 1\n")
    expect_clean_exit(i)  # EOF even before init


@test
def py_each_run_has_its_own_marker_and_request_id():
    # The handler can read the marker out of the bootstrap's frames; it is the run's own and
    # changes every run, so one learnt in a run is useless in the next.
    i = inst("python", """
        import sys
        def handler(event, context):
            f = sys._getframe()
            while f is not None:
                if "marker" in f.f_locals and isinstance(f.f_locals["marker"], str) and "msg" in f.f_locals:
                    return f.f_locals["marker"]
                f = f.f_back
            return None
    """).start()
    seen = []
    for _ in range(3):
        out, _ = i.ok()
        eq(out, i.last_marker)
        seen.append(out)
    eq(len(set(seen)), 3)
    assert i.marker not in seen


@test
def py_lingering_threads_and_timers_are_reported_as_strays():
    i = inst("python", """
        import _thread, signal, threading, time
        def handler(event, context):
            if event == "thread":
                threading.Thread(target=lambda: (time.sleep(0.3), print("late"))).start()
            elif event == "raw":
                _thread.start_new_thread(time.sleep, (0.3,))
            elif event == "alarm":
                signal.signal(signal.SIGALRM, lambda *a: print("ring"))
                signal.setitimer(signal.ITIMER_REAL, 5)
            elif event == "joined":
                t = threading.Thread(target=print, args=("joined",))
                t.start()
                t.join()
            elif event == "cancelled":
                signal.alarm(5)
                signal.alarm(0)
            return event
    """).start()
    for ev in ("joined", "cancelled", "plain") * 3:
        res, logs = i.invoke(ev)
        eq((res["output"], "strays" in res), (ev, False))
    for ev in ("thread", "raw", "alarm"):
        res, _ = i.invoke(ev)
        eq((res["output"], res.get("strays")), (ev, True))
        time.sleep(0.4)  # the engine would retire the instance; here it is reused to test the flag


@test
def py_module_level_threads_are_the_instances_not_a_runs():
    i = inst("python", """
        import threading, time
        threading.Thread(target=time.sleep, args=(3600,), daemon=True).start()
        def handler(event, context):
            if event == "thread":
                threading.Thread(target=time.sleep, args=(0.3,)).start()
            return event
    """).start()
    for _ in range(3):
        res, _ = i.invoke("plain")
        eq((res["output"], "strays" in res), ("plain", False))
    res, _ = i.invoke("thread")
    eq((res["output"], res.get("strays")), ("thread", True))


@test
def py_stray_check_costs_microseconds():
    i = inst("python", """
        import sys, time
        def handler(event, context):
            lingering = sys.modules["__main__"].lingering
            t = time.perf_counter()
            for _ in range(2000):
                lingering()
            return (time.perf_counter() - t) / 2000 * 1e6
    """).start()
    us, _ = i.ok()
    print(f"     python lingering(): {us:.1f} us per run")
    assert us < 1000, us


# ------------------------------------------------------------------------------------------- Node


@test
def node_async_exports_handler():
    i = inst("node", """
        exports.handler = async (event, context) => ({ got: event });
    """).start()
    eq(i.ok({"a": [1, 2.5, "é✓😀"]}), ({"got": {"a": [1, 2.5, "é✓😀"]}}, ""))
    expect_clean_exit(i)


@test
def node_module_exports_forms():
    i = inst("node", "module.exports = { handler: (event) => event.n + 1 };").start()
    eq(i.ok({"n": 1})[0], 2)
    i = inst("node", "module.exports = async (event) => 'bare function';").start()
    eq(i.ok()[0], "bare function")
    i = inst("node", "exports.main = () => 'main';", handler="main").start()
    eq(i.ok()[0], "main")
    i = inst("node", "exports.handler = () => new Promise((r) => setTimeout(() => r('late'), 20));").start()
    eq(i.ok()[0], "late")
    i = inst("node", "exports.handler = () => {};").start()
    eq(i.ok()[0], None)
    i = inst("node", "exports.handler = () => () => 1;").start()
    eq(i.ok()[0], None)


@test
def node_callback_and_context_methods():
    i = inst("node", """
        exports.handler = (event, context, callback) => {
          if (event === 'ok') setTimeout(() => callback(null, { cb: true }), 10);
          else if (event === 'err') setTimeout(() => callback(new Error('nope')), 10);
          else if (event === 'str') callback('plain string');
          else if (event === 'succeed') context.succeed('s');
          else if (event === 'fail') context.fail(new TypeError('f'));
          else if (event === 'done') context.done(null, 'd');
        };
    """).start()
    eq(i.ok("ok")[0], {"cb": True})
    eq(i.fail("err")[0]["message"], "Error: nope")
    eq(i.fail("str")[0]["message"], "plain string")
    eq(i.ok("succeed")[0], "s")
    eq(i.fail("fail")[0]["message"], "TypeError: f")
    eq(i.ok("done")[0], "d")
    # Async callback-style handler: the first to settle wins.
    i = inst("node", """
        exports.handler = async (event, context, callback) => {
          callback(null, 'callback');
          await new Promise((r) => setTimeout(r, 20));
          return 'promise';
        };
    """).start()
    eq(i.ok()[0], "callback")


@test
def node_context_fields_and_remaining_time():
    i = inst("node", """
        exports.handler = async (event, context) => {
          const r1 = context.getRemainingTimeInMillis();
          await new Promise((r) => setTimeout(r, event));
          const r2 = context.getRemainingTimeInMillis();
          const { getRemainingTimeInMillis, done, succeed, fail, ...rest } = context;
          return { ...rest, r1, r2 };
        };
    """).start()
    out, _ = i.ok(50, timeout_ms=5000, request_id="ex_9")
    assert 4000 < out["r1"] <= 5000 and out["r2"] <= out["r1"] - 40, out
    eq(out["functionName"], "f")
    eq(out["functionVersion"], "3")
    eq(out["awsRequestId"], "ex_9")
    eq(out["memoryLimitInMB"], "128")
    eq(out["invokedFunctionArn"], "arn:voltrun:lambda:local:000000000000:function:f")
    eq(out["logGroupName"], "/voltrun/f")
    eq(out["callbackWaitsForEmptyEventLoop"], True)
    assert "[3]" in out["logStreamName"], out
    eq(i.ok(50, timeout_ms=10)[0]["r2"], 0)


@test
def node_module_state_survives():
    i = inst("node", """
        console.log('loading');
        let counter = 0;
        exports.handler = async () => ++counter;
    """).start()
    eq(i.ok(), (1, "loading\n"))
    eq(i.ok(), (2, ""))
    eq(i.ok(), (3, ""))


@test
def node_logs_in_order_with_child_process():
    i = inst("node", """
        const { execSync } = require('child_process');
        exports.handler = async () => {
          console.log('before');
          execSync('echo child', { stdio: 'inherit' });
          console.log('after');
          console.error('err');
          process.stdout.write('no newline');
          return 'done';
        };
    """).start()
    for _ in range(2):
        eq(i.ok(), ("done", "before\nchild\nafter\nerr\nno newline"))
    expect_clean_exit(i)


@test
def node_large_logs_flushed_before_marker():
    # 2 MiB of console output overflows the pipe: Node queues it; it must all precede the marker.
    i = inst("node", """
        exports.handler = async () => {
          for (let k = 0; k < 32; k++) console.log(String(k).padStart(4, '0') + 'y'.repeat(65536));
          return 'ok';
        };
    """).start()
    out, logs = i.ok()
    eq(out, "ok")
    lines = logs.split("\n")
    eq(len(lines), 33)
    eq([l[:4] for l in lines[:32]], [str(k).zfill(4) for k in range(32)])


@test
def node_handler_errors():
    i = inst("node", """
        function helper() { throw new Error('boom'); }
        exports.handler = async (event) => {
          if (event === 'throw') helper();
          if (event === 'string') throw 'x';
          if (event === 'object') throw { code: 7 };
          if (event === 'reject') return Promise.reject(new RangeError('r'));
          if (event === 'symbol') throw Object.assign(new Error('m'), { name: Symbol('s') });
          if (event === 'custom') { const e = new Error('c'); e.name = 'MyError'; throw e; }
          return 'alive';
        };
    """).start()
    err, _ = i.fail("throw")
    eq((err["type"], err["message"]), ("HandlerError", "Error: boom"))
    assert err["stack"].startswith("Error: boom") and "helper" in err["stack"] and "index.js" in err["stack"], err
    eq(i.fail("string")[0]["message"], "x")
    eq(i.fail("object")[0]["message"], '{"code":7}')
    eq(i.fail("reject")[0]["message"], "RangeError: r")
    eq(i.fail("custom")[0]["message"], "MyError: c")
    eq(i.fail("symbol")[0]["message"], "unprintable error value")
    eq(i.ok()[0], "alive")
    # A synchronous (non-async) handler that throws.
    i = inst("node", "exports.handler = () => { throw new TypeError('sync'); };").start()
    eq(i.fail()[0]["message"], "TypeError: sync")


@test
def node_stray_errors_fail_the_run():
    i = inst("node", """
        exports.handler = async (event) => {
          if (event === 'rejection') Promise.reject(new Error('stray rejection'));
          if (event === 'exception') setTimeout(() => { throw new Error('stray exception'); }, 5);
          if (event === 'ok') return 'alive';
          return new Promise(() => {});  // never settles
        };
    """).start()
    eq(i.fail("rejection")[0]["message"], "Error: stray rejection")
    eq(i.fail("exception")[0]["message"], "Error: stray exception")
    eq(i.ok("ok")[0], "alive")


@test
def node_stray_errors_outside_a_run_are_printed():
    i = inst("node", """
        Promise.reject(new Error('init stray'));
        exports.handler = async () => 'ok';
    """).start()
    out, logs = i.ok()
    eq(out, "ok")
    assert logs.startswith("Unhandled rejection: Error: init stray\n"), logs
    eq(i.ok(), ("ok", ""))


@test
def node_patched_stdout_write():
    # A logging library may replace process.stdout.write with one that never calls back.
    i = inst("node", """
        const fs = require('fs');
        process.stdout.write = (chunk) => { fs.writeSync(1, '[p] ' + chunk); return true; };
        exports.handler = async () => { console.log('hello'); return 'ok'; };
    """).start()
    eq(i.ok(), ("ok", "[p] hello\n"))


@test
def node_init_errors():
    expect_init_error(inst("node", "exports.handler = async (e) => {\n"), "SyntaxError")
    expect_init_error(inst("node", "exports.other = () => 1;"), "Handler 'handler' missing")
    expect_init_error(inst("node", "exports.handler = 5;"), "not a function")
    expect_init_error(inst("node", "require('no-such-module-xyz');"), "no-such-module-xyz")
    i = inst("node", "console.log('partial'); throw new Error('at load');")
    reply = i.init()
    eq(reply["type"], "init_error")
    assert "Error: at load" in reply["error"]["message"] and "index.js" in reply["error"]["stack"], reply
    eq(i.logs_until_marker(), "partial\n")
    eq(i.wait(), 1)
    # A broken ES module is an init error too, not a crash.
    expect_init_error(inst("node", "import os from 'node:os';\nexport const handler = ;\n"), "SyntaxError")


@test
def node_unserialisable_result():
    i = inst("node", """
        exports.handler = async (event) => {
          if (event === 'bigint') return { n: 10n };
          if (event === 'circular') { const o = {}; o.self = o; return o; }
          return 'fine';
        };
    """).start()
    for ev in ("bigint", "circular"):
        err, _ = i.fail(ev)
        eq(err["type"], "RuntimeError")
        assert "not JSON serializable" in err["message"], err
    eq(i.ok()[0], "fine")


@test
def node_esm_handler():
    i = inst("node", """
        import os from 'node:os';
        import { VALUE } from './helper.mjs';
        console.log('esm loaded');
        export const handler = async (e) => ({ e, v: VALUE, os: typeof os.hostname, url: import.meta.url.startsWith('file:') });
    """, extra_files={"helper.mjs": "export const VALUE = 'sibling';\n"}).start()
    out, logs = i.ok(7)
    eq(out, {"e": 7, "v": "sibling", "os": "function", "url": True})
    eq(logs, "esm loaded\n")  # no loader warnings or other noise
    # Top-level await cannot be require()d; it is import()ed.
    i = inst("node", """
        const x = await Promise.resolve(5);
        export async function handler() { return x; }
    """).start()
    eq(i.ok(), (5, ""))
    expect_clean_exit(i)


@test
def node_big_event_round_trip():
    i = inst("node", "exports.handler = async (event) => event;", node_args=("--max-old-space-size=256",)).start()
    out, _ = i.ok({"blob": BIG, "n": 1})
    assert out == {"blob": BIG, "n": 1}


@test
def node_eof_clean_exit():
    expect_clean_exit(inst("node", "exports.handler = async () => 1;").start())
    expect_clean_exit(inst("node", "exports.handler = async () => 1;"))  # EOF even before init


@test
def node_each_run_has_its_own_marker_and_request_id():
    # A wrapped fs.writeSync sees nothing of the bootstrap's writes (it keeps its own
    # references); the markers differ from run to run anyway.
    i = inst("node", """
        const fs = require('fs');
        const seen = [];
        const orig = fs.writeSync;
        fs.writeSync = function (fd, buf, ...rest) { if (fd === 1) seen.push(String(buf)); return orig.call(this, fd, buf, ...rest); };
        exports.handler = async () => seen.filter((s) => s.includes('voltrun:')).length;
    """).start()
    for _ in range(3):
        eq(i.ok()[0], 0)


@test
def node_lingering_timers_workers_and_children_are_reported_as_strays():
    i = inst("node", """
        const { Worker } = require('worker_threads');
        const { spawn } = require('child_process');
        setInterval(() => {}, 60000);  // the instance's own, started at load: not a stray
        exports.handler = async (event) => {
          if (event === 'timeout') setTimeout(() => console.log('late'), 300);
          if (event === 'immediate') setImmediate(() => console.log('later'));
          if (event === 'worker') new Worker('setTimeout(() => {}, 300)', { eval: true });
          if (event === 'child') spawn('sleep', ['0.3']);
          if (event === 'awaited') await new Promise((r) => setTimeout(r, 5));
          if (event === 'cleared') clearTimeout(setTimeout(() => {}, 1000));
          if (event === 'unref') setTimeout(() => {}, 1000).unref();
          return event;
        };
    """).start()
    for ev in ("timeout", "worker", "child"):
        res, _ = i.invoke(ev)
        eq((res["output"], res.get("strays")), (ev, True))
        time.sleep(0.4)
    for ev in ("awaited", "cleared", "unref", "plain"):
        res, _ = i.invoke(ev)
        eq((res["output"], "strays" in res), (ev, False))
    # An immediate runs in the turns the bootstrap gives before its check: its output is
    # its own run's, and nothing is left behind.
    res, logs = i.invoke("immediate")
    eq((res["output"], "strays" in res), ("immediate", False))
    assert "later" in logs, logs


@test
def node_a_child_awaited_to_its_exit_is_not_a_stray():
    i = inst("node", """
        const { spawn } = require('child_process');
        const { once } = require('events');
        exports.handler = async () => {
          const child = spawn('true');
          await once(child, 'exit');
          return 'done';
        };
    """).start()
    for _ in range(3):
        res, _ = i.invoke("x")
        eq((res["output"], "strays" in res), ("done", False))


@test
def node_stray_check_costs_microseconds():
    i = inst("node", """
        exports.handler = async () => {
          const t = process.hrtime.bigint();
          for (let k = 0; k < 2000; k++) process.getActiveResourcesInfo().filter((r) => r === 'Timeout');
          return Number(process.hrtime.bigint() - t) / 2000 / 1000;
        };
    """).start()
    us, _ = i.ok()
    print(f"     node getActiveResourcesInfo(): {us:.1f} us per run")
    assert us < 1000, us


# -- packages (SPEC §10): module.function handlers, module paths ---------------------------------


@test
def python_package_handler_in_a_sub_package_reads_a_data_file_by_relative_path():
    i = inst("python", None, handler="run", module="app.handlers.main", extra_files={
        "app/__init__.py": "",
        "app/handlers/__init__.py": "",
        "app/handlers/main.py": """
            from app.util import shout
            import dep_mod, layer_mod
            def run(event, context):
                with open("data/words.txt") as f:
                    return [shout(f.read().strip()), dep_mod.X, layer_mod.Y, __name__]
        """,
        "app/util.py": "def shout(s): return s.upper()\n",
        "data/words.txt": "hello\n",
    }, deps={"dep_mod.py": "X = 'dep'\n"}, opt={"python/layer_mod.py": "Y = 'layer'\n"}).start()
    out, _ = i.ok({})
    eq(out, ["HELLO", "dep", "layer", "app.handlers.main"])


@test
def python_package_paths_are_task_then_deps_then_layers():
    i = inst("python", None, handler="handler", module="main", extra_files={
        "main.py": "import shadow\ndef handler(e, c): return shadow.WHO\n",
    }, deps={"shadow.py": "WHO = 'deps'\n"}, opt={"python/shadow.py": "WHO = 'layer'\n"}).start()
    eq(i.ok({})[0], "deps")


@test
def python_package_missing_module_or_function_is_an_init_error():
    i = inst("python", None, handler="handler", module="nope", extra_files={"main.py": "def handler(e, c): return 1\n"})
    reply = i.init()
    eq(reply["type"], "init_error")
    assert "Unable to import module 'nope'" in reply["error"]["message"], reply
    i = inst("python", None, handler="absent", module="main", extra_files={"main.py": "def handler(e, c): return 1\n"})
    reply = i.init()
    eq(reply["type"], "init_error")
    assert "Handler 'absent' missing on module 'main'" in reply["error"]["message"], reply


@test
def node_package_commonjs_with_a_dependency_and_a_layer():
    i = inst("node", None, handler="handler", module="src/app", extra_files={
        "src/app.js": """
            const dep = require('dep');
            const lay = require('lay');
            const fs = require('fs');
            exports.handler = async () => [dep.name, lay.name, fs.readFileSync('data.txt', 'utf8').trim()];
        """,
        "data.txt": "from cwd\n",
    }, deps={"node_modules/dep/index.js": "module.exports = { name: 'dep' };",
             "node_modules/dep/package.json": '{"name": "dep", "main": "index.js"}'},
       opt={"nodejs/node_modules/lay/index.js": "module.exports = { name: 'lay' };"})
    # The engine makes task/node_modules a link to the dependency tree.
    os.symlink(os.path.join(i.deps_dir, "node_modules"), os.path.join(i.dir, "node_modules"))
    i.start()
    eq(i.ok({})[0], ["dep", "lay", "from cwd"])


@test
def node_package_esm_index_mjs_imports_its_dependency():
    i = inst("node", None, handler="handler", module="index", extra_files={
        "index.mjs": """
            import dep from 'dep';
            import { helper } from './lib/helper.mjs';
            export const handler = async () => [dep.name, helper()];
        """,
        "lib/helper.mjs": "export const helper = () => 'helped';",
    }, deps={"node_modules/dep/index.js": "module.exports = { name: 'dep' };",
             "node_modules/dep/package.json": '{"name": "dep", "main": "index.js"}'})
    os.symlink(os.path.join(i.deps_dir, "node_modules"), os.path.join(i.dir, "node_modules"))
    i.start()
    eq(i.ok({})[0], ["dep", "helped"])


@test
def node_package_esm_by_package_type_and_a_missing_module():
    i = inst("node", None, handler="handler", module="index", extra_files={
        "package.json": '{"type": "module"}',
        "index.js": "export const handler = async () => import.meta.url.endsWith('/index.js');",
    }).start()
    eq(i.ok({})[0], True)
    i = inst("node", None, handler="handler", module="app", extra_files={"index.js": "exports.handler = () => 1;"})
    reply = i.init()
    eq(reply["type"], "init_error")
    assert "Unable to load module 'app'" in reply["error"]["message"], reply


# ------------------------------------------------------------------------------------------------


def main():
    wanted = sys.argv[1:]
    passed = failed = 0
    for fn in TESTS:
        if wanted and not any(w in fn.__name__ for w in wanted):
            continue
        t0 = time.monotonic()
        try:
            fn()
        except Exception:
            failed += 1
            print(f"FAIL {fn.__name__}\n{textwrap.indent(traceback.format_exc(), '    ')}", flush=True)
        else:
            passed += 1
            print(f"ok   {fn.__name__} ({time.monotonic() - t0:.2f}s)", flush=True)
        finally:
            while _live:
                _live.pop().cleanup()
    print(f"{passed} passed, {failed} failed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
