"""VoltRun Python runtime bootstrap (CPython 3.11, stdlib only).

Started by the engine as `python3 -u bootstrap.py` with cwd = the function's code directory
(/var/task, where the instance is isolated) and
fd 0 = /dev/null, fd 1 = fd 2 = the log pipe, fd 3 = control in, fd 4 = control out.
Every control message is a 4-byte big-endian length followed by a UTF-8 JSON object.
See docs/RUNTIME_PROTOCOL.md for the full protocol.
"""
import _signal
import importlib.util
import json
import os
import select
import struct
import sys
import time
import traceback

CTL_IN, CTL_OUT = 3, 4

# The user's code must not inherit the control channel (e.g. through subprocess with close_fds=False).
os.set_inheritable(CTL_IN, False)
os.set_inheritable(CTL_OUT, False)
# Private copy of the log pipe for markers: the user may close or redirect fd 1 / sys.stdout.
# os.dup() returns a non-inheritable fd.
LOG_FD = os.dup(1)

_BOOTSTRAP_FILE = os.path.abspath(__file__)
# asyncio and inspect are imported only when a handler needs them: an idle instance of a plain
# handler stays smaller and starts faster.
_loop = None


def _asyncio_dir():
    mod = sys.modules.get("asyncio")
    return os.path.dirname(mod.__file__) + os.sep if mod else None


def _run_awaitable(value):
    """Runs a coroutine on one loop kept for the instance's life, so loop-bound module state
    (clients, queues, ...) survives between runs."""
    global _loop
    if _loop is None:
        import asyncio
        _loop = asyncio.new_event_loop()
        asyncio.set_event_loop(_loop)
    return _loop.run_until_complete(value)


def _write_all(fd, data):
    view = memoryview(data)
    while view:
        try:
            n = os.write(fd, view)
        except BlockingIOError:
            # The user (or a child) may have set O_NONBLOCK on the shared pipe description.
            select.select([], [fd], [])
            continue
        view = view[n:]


def _read_exact(fd, n):
    buf = bytearray()
    while len(buf) < n:
        try:
            chunk = os.read(fd, min(n - len(buf), 1 << 20))
        except BlockingIOError:
            select.select([fd], [], [])
            continue
        if not chunk:
            return None
        buf += chunk
    return bytes(buf)


def read_frame():
    """Next message from the engine; exits quietly on EOF (the engine is done with us)."""
    header = _read_exact(CTL_IN, 4)
    body = header and _read_exact(CTL_IN, struct.unpack(">I", header)[0])
    if body is None:
        os._exit(0)
    try:
        msg = json.loads(body)
        if isinstance(msg, dict):
            return msg
    except ValueError:
        pass
    os._exit(2)  # the stream is desynchronised: nothing sensible left to do


def send_frame(payload):
    """payload: a dict, or an already-serialised JSON object as str."""
    if not isinstance(payload, str):
        payload = json.dumps(payload, separators=(",", ":"))
    data = payload.encode("utf-8")
    _write_all(CTL_OUT, struct.pack(">I", len(data)) + data)


def end_of_logs(marker):
    """Flush whatever Python still buffers for fd 1/2, then mark the end of this run's logs."""
    for stream in {id(s): s for s in (sys.stdout, sys.stderr, sys.__stdout__, sys.__stderr__)}.values():
        try:
            stream.flush()
        except BaseException:  # closed, replaced by something odd, ...
            pass
    _write_all(LOG_FD, marker.encode("utf-8"))


def describe(exc):
    """'ClassName: message', or just 'ClassName' when the message is empty."""
    try:
        text = str(exc)
    except BaseException:  # a user __str__ that fails
        text = "<exception str() failed>"
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def error_info(err_type, exc, message=None):
    """{type, message, stack} for an exception, without the bootstrap's own frames."""
    te = traceback.TracebackException(type(exc), exc, exc.__traceback__)
    te.stack[:] = [
        f for f in te.stack
        if f.filename != _BOOTSTRAP_FILE
        and not (_asyncio_dir() and f.filename.startswith(_asyncio_dir()))
        and not f.filename.startswith("<frozen importlib")
    ]
    if message is None:
        message = describe(exc)
    return {"type": err_type, "message": message, "stack": "".join(te.format())}


class LambdaContext:
    """The `context` argument, as in AWS Lambda's Python runtime."""

    def __init__(self, init, request_id, timeout_ms, log_stream_name):
        name = init.get("function_name", "")
        self.function_name = name
        self.function_version = str(init.get("function_version", ""))
        self.aws_request_id = self.request_id = request_id
        self.memory_limit_in_mb = int(init.get("memory_limit_in_mb", 0))
        self.invoked_function_arn = f"arn:voltrun:lambda:local:000000000000:function:{name}"
        self.log_group_name = f"/voltrun/{name}"
        self.log_stream_name = log_stream_name
        self.identity = None
        self.client_context = None
        self._deadline = time.monotonic() + timeout_ms / 1000.0

    def get_remaining_time_in_millis(self):
        return max(0, int((self._deadline - time.monotonic()) * 1000))


def takes_only_event(fn):
    """True if fn accepts exactly one positional parameter and no *args: call it as fn(event)."""
    code = getattr(fn, "__code__", None)
    if code is not None and not hasattr(fn, "__self__"):
        # Plain functions: read the code object, without importing inspect (~1 MiB).
        return code.co_argcount == 1 and not code.co_flags & 0x04  # CO_VARARGS
    import inspect
    try:
        params = inspect.signature(fn).parameters.values()
    except (TypeError, ValueError):  # builtins, odd callables: assume the Lambda signature
        return False
    kinds = [p.kind for p in params]
    if inspect.Parameter.VAR_POSITIONAL in kinds:
        return False
    positional = (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)
    return sum(k in positional for k in kinds) == 1


def module_paths(task_root):
    """The module path of the function, first to last (docs/RUNTIME_PROTOCOL.md): the task
    root, the dependency tree, the layers' python directory. The engine names the last two
    (VOLTRUN_DEPS_ROOT, VOLTRUN_OPT_ROOT); the isolated tiers see /var/deps and /opt."""
    deps = os.environ.get("VOLTRUN_DEPS_ROOT", "/var/deps")
    opt = os.environ.get("VOLTRUN_OPT_ROOT", "/opt")
    return [task_root, deps, os.path.join(opt, "python")]


def load_handler(init):
    entry, name = init["entry"], init.get("handler") or "handler"
    package_module = init.get("module")
    if package_module:
        # A package: `module.function`, the module imported by name from the task root
        # (dots for sub-packages), as Lambda does.
        module_name = package_module
        sys.path[0:0] = module_paths(entry)
    else:
        module_name = os.path.splitext(os.path.basename(entry))[0]
    try:
        if package_module:
            module = importlib.import_module(module_name)  # module-level code runs here, once
        else:
            sys.path[0:0] = module_paths(os.path.dirname(entry))
            spec = importlib.util.spec_from_file_location(module_name, entry)
            if spec is None:
                raise ImportError(f"cannot load {entry}")
            module = importlib.util.module_from_spec(spec)
            sys.modules[module_name] = module
            spec.loader.exec_module(module)  # module-level code runs here, once
    except BaseException as exc:  # SyntaxError, ImportError, SystemExit at module level, ...
        return None, error_info("RuntimeError", exc, f"Unable to import module '{module_name}': {describe(exc)}")
    handler = getattr(module, name, None)
    if handler is None:
        msg = f"Handler '{name}' missing on module '{module_name}'"
    elif not callable(handler):
        msg = f"Handler '{name}' on module '{module_name}' is not callable"
    else:
        return handler, None
    return None, {"type": "RuntimeError", "message": msg, "stack": ""}


def run(handler, one_arg, event, context):
    """Call the handler; returns the serialised result frame (a JSON string)."""
    try:
        value = handler(event) if one_arg else handler(event, context)
        if hasattr(value, "__await__"):
            value = _run_awaitable(value)
    except MemoryError as exc:
        return json.dumps({"type": "result", "ok": False, "error": error_info("OutOfMemory", exc)})
    except BaseException as exc:  # includes SystemExit / KeyboardInterrupt raised by the handler
        return json.dumps({"type": "result", "ok": False, "error": error_info("HandlerError", exc)})
    try:
        output = json.dumps(value, allow_nan=False, separators=(",", ":"))
    except MemoryError as exc:
        return json.dumps({"type": "result", "ok": False, "error": error_info("OutOfMemory", exc)})
    except (TypeError, ValueError, RecursionError) as exc:
        err = {"type": "RuntimeError", "stack": "",
               "message": f"handler result is not JSON serializable: {type(exc).__name__}: {exc}"}
        return json.dumps({"type": "result", "ok": False, "error": err})
    return '{"type":"result","ok":true,"output":' + output + "}"


def other_processes():
    """True when a process other than this one lives in the sandbox (its own pid namespace):
    asked for by the gVisor tier, whose host cannot see the function's processes."""
    me = str(os.getpid())
    try:
        return any(d.isdigit() and d != me for d in os.listdir("/proc"))
    except OSError:
        return True


# Interval timers and the signals they send. ITIMER_REAL (also alarm()) is always checked: with
# no handler its SIGALRM would kill the instance in a later run. The CPU-time timers only matter
# when a Python handler for their signal would run the function's code.
_ITIMERS = ((_signal.SIGALRM, _signal.ITIMER_REAL, True), (_signal.SIGVTALRM, _signal.ITIMER_VIRTUAL, False),
            (_signal.SIGPROF, _signal.ITIMER_PROF, False))


def _thread_count():
    """Threads of this process (all kinds: threading, _thread, native)."""
    # Linux gives /proc/<pid>/task a link count of 2 + its threads: one stat() in the common
    # case, the listing otherwise (other kernels, e.g. gVisor's, may count differently).
    if os.stat("/proc/self/task").st_nlink == 3:
        return 1
    return len(os.listdir("/proc/self/task"))


def thread_counts():
    """(Python threads, threads of any kind) of this process."""
    try:
        return len(sys._current_frames()), _thread_count()
    except OSError:
        return len(sys._current_frames()), 1


def lingering(base=(1, 1)):
    """(stray, seen): stray is True when something the run started can still run the
    function's code after it, and so print into a later run: a thread beyond the `base` ones
    the instance itself runs (started by module-level code), or a pending interval timer whose
    signal handler would run in this thread later. seen is the (Python threads, threads) it
    counted, from which the caller lowers its base. Costs about two microseconds."""
    py_base, os_base = base
    py_now = len(sys._current_frames())
    if py_now > py_base:  # a Python thread of the run still running
        return True, base
    os_now = os_base
    try:
        # A thread just joined can take a moment to leave /proc/self/task.
        for _ in range(100):
            os_now = _thread_count()
            if os_now <= os_base:
                break
            time.sleep(0.0001)
        else:
            return True, base
    except OSError:
        pass
    timers = any(_signal.getitimer(which)[0] for sig, which, always in _ITIMERS
                 if always or callable(_signal.getsignal(sig)))
    return timers, (py_now, os_now)


def main():
    # A spare (started before its function is known) says when it is up, so the engine
    # hands out only spares whose interpreter has finished starting.
    if os.environ.pop("VOLTRUN_SPARE", None) == "1":
        send_frame({"type": "started"})
    init = read_frame()
    if init.get("type") != "init":
        os._exit(2)
    marker = init["marker"]  # only for init_error: each run brings a marker of its own
    # A pre-started instance learns its function's environment here, before the code loads.
    os.environ.update({str(k): str(v) for k, v in (init.get("env") or {}).items()})
    handler, error = load_handler(init)
    if error is not None:
        end_of_logs(marker)
        send_frame({"type": "init_error", "error": error})
        os._exit(1)
    one_arg = takes_only_event(handler)
    log_stream = time.strftime("%Y/%m/%d", time.gmtime()) + \
        f"/[{init.get('function_version', '')}]{os.urandom(16).hex()}"
    # What module-level code left running (a metrics flusher, a warmed pool) is the
    # instance's own, not a run's.
    base = thread_counts()
    send_frame({"type": "ready"})
    report_strays = init.get("report_strays") is True

    while True:
        msg = read_frame()
        if msg.get("type") != "invoke":
            os._exit(2)
        marker, request_id = msg.get("marker"), msg.get("request_id", "")
        if not isinstance(marker, str) or not isinstance(request_id, str):
            os._exit(2)
        # The deadline starts when the invoke frame is read.
        context = LambdaContext(init, request_id, msg.get("timeout_ms", 0), log_stream)
        frame = run(handler, one_arg, msg.get("event"), context)[:-1] + ',"request_id":' + json.dumps(request_id)
        stray, seen = lingering(base)
        if stray or (report_strays and other_processes()):
            frame += ',"strays":true'
        else:
            # The instance's own threads may end: the base follows them down, so a run cannot
            # hide a thread of its own behind one that ended.
            base = tuple(map(min, base, seen))
        end_of_logs(marker)
        send_frame(frame + "}")


if __name__ == "__main__":
    main()
