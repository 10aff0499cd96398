"""``ferroloop.Loop``: an ``asyncio.AbstractEventLoop`` on a native core.

The native ``LoopCore`` owns the ready queue, the timer heap and the poller and implements the hot
methods (``call_soon``, ``call_later``, ``call_at``, ``call_soon_threadsafe``, ``time``, the loop
turn). This class adds the rest of the stdlib loop's behaviour around it: lifecycle, tasks and
futures, executors, exception handling, debug mode, async generator hooks, signals and fd
callbacks. The stdlib loop (``asyncio.base_events`` / ``unix_events``) is the specification.

The core calls back into three cold-path hooks defined here: ``_handle_callback_error`` when a
callback raises, ``_log_slow_callback`` in debug mode, and ``_debug_new_handle`` for the debug-mode
checks on every new handle.
"""

from __future__ import annotations

import concurrent.futures
import errno
import os
import selectors
import signal
import socket
import sys
import threading
import traceback
import warnings
import weakref
from asyncio import base_events, coroutines, events, format_helpers, futures, tasks, unix_events
from asyncio.log import logger

from ._core import LoopCore
from ._network import NetworkMixin
from ._sockets import SocketMixin

if not getattr(sys, "_is_gil_enabled", lambda: True)():
    # The native core serializes its state with the GIL (see src/ffi/gil_cell.rs).
    raise ImportError("ferroloop needs an interpreter with the GIL enabled")

__all__ = ["Loop"]

_PY312 = sys.version_info >= (3, 12)
_PY313 = sys.version_info >= (3, 13)

# Python's own coroutine-origin depth for debug mode (asyncio.constants.DEBUG_STACK_DEPTH).
_DEBUG_STACK_DEPTH = 10
_C_INT_MAX = 2**31 - 1


def _check_c_int(fd):
    """An fd beyond a C int is the `OverflowError` the stdlib's `epoll.register()` raises."""
    if fd > _C_INT_MAX:
        raise OverflowError("Python int too large to convert to C int")


def _is_open(fd):
    try:
        os.fstat(fd)
    except OSError:
        return False
    return True


def _format_callback(callback, args, debug):
    if _PY313:
        # 3.13 shows the arguments only in debug mode.
        return format_helpers._format_callback_source(callback, args, debug=debug)
    return format_helpers._format_callback_source(callback, args)


def _format_handle(handle):
    cb = handle._callback
    if isinstance(getattr(cb, "__self__", None), tasks.Task):
        return repr(cb.__self__)
    return str(handle)


class Loop(LoopCore, NetworkMixin, SocketMixin, events.AbstractEventLoop):
    """A drop-in replacement for the stdlib event loop."""

    def __init__(self):
        self._fileobjs = {}
        self._default_executor = None
        self._executor_shutdown_called = False
        self._exception_handler = None
        self._asyncgens = weakref.WeakSet()
        self._asyncgens_shutdown_called = False
        self._coroutine_origin_tracking_enabled = False
        self._coroutine_origin_tracking_saved_depth = None
        self._old_agen_hooks = None
        self._current_handle = None
        self.slow_callback_duration = 0.1
        # Signal handling state: the wakeup socketpair is made on first use.
        self._signal_handlers = {}
        self._ssock = None
        self._csock = None
        self._init_network()
        self.set_debug(coroutines._is_debug_mode())
        self._set_custom_time(self._subclass_time())

    # The scheduler reads the native clock, unless `time` is overridden: in a subclass, or on the
    # instance (as `mock.patch.object(loop, "time")` does). Then it asks `self.time()` for every
    # deadline, as the stdlib's loop does. (Setting and deleting are watched rather than the
    # instance's `__dict__` looked at: reading `__dict__` makes every attribute lookup on the
    # loop slower from then on.)

    def __setattr__(self, name, value):
        super().__setattr__(name, value)
        if name == "time":
            self._set_custom_time(True)

    def __delattr__(self, name):
        super().__delattr__(name)
        if name == "time":
            self._set_custom_time(self._subclass_time())

    def _subclass_time(self):
        return type(self).time is not LoopCore.time

    def __repr__(self):
        return (
            f"<{self.__class__.__name__} running={self.is_running()} "
            f"closed={self.is_closed()} debug={self.get_debug()}>"
        )

    def __del__(self, _warn=warnings.warn):
        if not self.is_closed():
            _warn(f"unclosed event loop {self!r}", ResourceWarning, source=self)
            if not self.is_running():
                self.close()

    # -- lifecycle ---------------------------------------------------------------------------

    @property
    def _closed(self):
        # The stdlib loop's attribute (uvloop has it too), which some code reads.
        return self.is_closed()

    @property
    def _scheduled(self):
        # The stdlib loop's heap of pending `TimerHandle`s, which test helpers that fast-forward
        # time walk (calling `_run()` then `cancel()` on the due ones): here a new list of them
        # each time, earliest first (which is a heap as well). Changing the list changes nothing.
        return self._scheduled_timers()

    def _check_closed(self):
        if self.is_closed():
            raise RuntimeError("Event loop is closed")

    def _check_running(self):
        if self.is_running():
            raise RuntimeError("This event loop is already running")
        if events._get_running_loop() is not None:
            raise RuntimeError("Cannot run the event loop while another loop is running")

    def _run_forever_setup(self):
        self._check_closed()
        self._check_running()
        self._set_coroutine_origin_tracking(self.get_debug())
        self._old_agen_hooks = sys.get_asyncgen_hooks()
        self._thread_id = threading.get_ident()
        sys.set_asyncgen_hooks(
            firstiter=self._asyncgen_firstiter_hook, finalizer=self._asyncgen_finalizer_hook
        )
        events._set_running_loop(self)

    def _run_forever_cleanup(self):
        self._thread_id = None
        events._set_running_loop(None)
        self._set_coroutine_origin_tracking(False)
        if self._old_agen_hooks is not None:
            sys.set_asyncgen_hooks(*self._old_agen_hooks)
            self._old_agen_hooks = None

    def run_forever(self):
        self._run_forever_setup()
        try:
            self._run_forever_inner()
        finally:
            self._run_forever_cleanup()

    def run_until_complete(self, future):
        self._check_closed()
        self._check_running()
        new_task = not futures.isfuture(future)
        future = tasks.ensure_future(future, loop=self)
        if new_task:
            # The caller never sees this task, so don't warn that it was destroyed pending.
            future._log_destroy_pending = False
        # The stdlib's own callback: libraries recognise the task the loop drives by it (anyio
        # takes that task for the root of its task tree).
        future.add_done_callback(base_events._run_until_complete_cb)
        try:
            self.run_forever()
        except BaseException:
            if new_task and future.done() and not future.cancelled():
                # Retrieve the exception so it is not logged as never retrieved.
                future.exception()
            raise
        finally:
            future.remove_done_callback(base_events._run_until_complete_cb)
        if not future.done():
            raise RuntimeError("Event loop stopped before Future completed.")
        return future.result()

    def close(self):
        if self.is_running():
            raise RuntimeError("Cannot close a running event loop")
        if self.is_closed():
            return
        if self.get_debug():
            logger.debug("Close %r", self)
        if sys.is_finalizing():
            if self._signal_handlers:
                warnings.warn(
                    f"Closing the loop {self!r} on interpreter shutdown "
                    "stage, skipping signal handlers removal",
                    ResourceWarning,
                    stacklevel=1,
                    source=self,
                )
            self._signal_handlers.clear()
        else:
            for sig in list(self._signal_handlers):
                self.remove_signal_handler(sig)
        self._close_self_pipe()
        self._close_core()
        self._fileobjs.clear()
        # As the selector loop does: transports' reprs see a closed loop's registrations gone.
        self._selector = None
        executor = self._default_executor
        if executor is not None:
            self._default_executor = None
            executor.shutdown(wait=False)

    # The stdlib's own coroutine (on the same `_asyncgens` state): warnings about it name
    # `BaseEventLoop.shutdown_asyncgens`, as filters written for the stdlib loop expect.
    shutdown_asyncgens = base_events.BaseEventLoop.shutdown_asyncgens

    def _asyncgen_firstiter_hook(self, agen):
        if self._asyncgens_shutdown_called:
            warnings.warn(
                f"asynchronous generator {agen!r} was scheduled after loop.shutdown_asyncgens() call",
                ResourceWarning,
                stacklevel=1,
                source=self,
            )
        self._asyncgens.add(agen)

    def _asyncgen_finalizer_hook(self, agen):
        self._asyncgens.discard(agen)
        if not self.is_closed():
            self.call_soon_threadsafe(self.create_task, agen.aclose())

    # -- futures and tasks -------------------------------------------------------------------

    # create_future() and the common create_task() are native; this is create_task() with a
    # task factory or in debug mode.
    def _create_task_slow(self, coro, name, context):
        if self._task_factory is None:
            task = tasks.Task(coro, loop=self, name=name, context=context)
            if task._source_traceback:
                del task._source_traceback[-1]
        else:
            if context is None:
                # The factory signature without context, for factories that predate it.
                task = self._task_factory(self, coro)
            else:
                task = self._task_factory(self, coro, context=context)
            if _PY313:
                task.set_name(name)
            else:
                tasks._set_task_name(task, name)
        return task

    def set_task_factory(self, factory):
        if factory is not None and not callable(factory):
            raise TypeError("task factory must be a callable or None")
        self._task_factory = factory

    def get_task_factory(self):
        return self._task_factory

    # -- debug -------------------------------------------------------------------------------

    @property
    def _debug(self):
        return self.get_debug()

    @_debug.setter
    def _debug(self, enabled):
        # The stdlib's plain attribute: setting it changes the flag only (`set_debug` also
        # switches coroutine origin tracking).
        self._set_debug_flag(bool(enabled))

    def set_debug(self, enabled):
        self._set_debug_flag(bool(enabled))
        if self.is_running():
            self.call_soon_threadsafe(self._set_coroutine_origin_tracking, enabled)

    def _set_coroutine_origin_tracking(self, enabled):
        if bool(enabled) == bool(self._coroutine_origin_tracking_enabled):
            return
        if enabled:
            self._coroutine_origin_tracking_saved_depth = sys.get_coroutine_origin_tracking_depth()
            sys.set_coroutine_origin_tracking_depth(_DEBUG_STACK_DEPTH)
        else:
            sys.set_coroutine_origin_tracking_depth(self._coroutine_origin_tracking_saved_depth)
        self._coroutine_origin_tracking_enabled = enabled

    def _check_thread(self):
        if self._thread_id is None:
            return
        if threading.get_ident() != self._thread_id:
            raise RuntimeError(
                "Non-thread-safe operation invoked on an event loop other than the current one"
            )

    def _check_callback(self, callback, method):
        if coroutines.iscoroutine(callback) or coroutines.iscoroutinefunction(callback):
            raise TypeError(f"coroutines cannot be used with {method}()")
        if not callable(callback):
            raise TypeError(f"a callable object was expected by {method}(), got {callback!r}")

    def _debug_new_handle(self, handle, method):
        """Debug-mode checks for a handle the core just made, and where it was made."""
        if method in ("call_soon", "call_later", "call_at"):
            self._check_thread()
        if method not in ("add_reader", "add_writer"):
            self._check_callback(handle._callback, method)
        # Frame 1 is the Python code that called call_soon & co. (the core adds no frame).
        handle._source_traceback = format_helpers.extract_stack(sys._getframe(1))

    def _log_slow_callback(self, handle, duration):
        logger.warning("Executing %s took %.3f seconds", _format_handle(handle), duration)

    # -- errors ------------------------------------------------------------------------------

    def get_exception_handler(self):
        return self._exception_handler

    def set_exception_handler(self, handler):
        if handler is not None and not callable(handler):
            raise TypeError(f"A callable object or None is expected, got {handler!r}")
        self._exception_handler = handler

    def default_exception_handler(self, context):
        message = context.get("message")
        if not message:
            message = "Unhandled exception in event loop"
        exception = context.get("exception")
        if exception is not None:
            exc_info = (type(exception), exception, exception.__traceback__)
        else:
            exc_info = False
        current = self._current_handle
        if "source_traceback" not in context and current is not None and current._source_traceback:
            context["handle_traceback"] = current._source_traceback
        log_lines = [message]
        for key in sorted(context):
            if key in {"message", "exception"}:
                continue
            value = context[key]
            if key == "source_traceback":
                tb = "".join(traceback.format_list(value))
                value = "Object created at (most recent call last):\n" + tb.rstrip()
            elif key == "handle_traceback":
                tb = "".join(traceback.format_list(value))
                value = "Handle created at (most recent call last):\n" + tb.rstrip()
            else:
                value = repr(value)
            log_lines.append(f"{key}: {value}")
        logger.error("\n".join(log_lines), exc_info=exc_info)

    def call_exception_handler(self, context):
        if self._exception_handler is None:
            try:
                self.default_exception_handler(context)
            except (SystemExit, KeyboardInterrupt):
                raise
            except BaseException:
                logger.error("Exception in default exception handler", exc_info=True)
            return
        try:
            ctx = None
            if _PY312:
                # 3.12+: run the handler in the context of the object the error is about.
                thing = context.get("task")
                if thing is None:
                    thing = context.get("future")
                if thing is None:
                    thing = context.get("handle")
                if thing is not None and hasattr(thing, "get_context"):
                    ctx = thing.get_context()
            if ctx is not None and hasattr(ctx, "run"):
                ctx.run(self._exception_handler, self, context)
            else:
                self._exception_handler(self, context)
        except (SystemExit, KeyboardInterrupt):
            raise
        except BaseException as exc:
            try:
                self.default_exception_handler(
                    {
                        "message": "Unhandled error in exception handler",
                        "exception": exc,
                        "context": context,
                    }
                )
            except (SystemExit, KeyboardInterrupt):
                raise
            except BaseException:
                logger.error(
                    "Exception in default exception handler while handling an unexpected "
                    "error in custom exception handler",
                    exc_info=True,
                )

    def _handle_callback_error(self, handle, exc):
        """A callback raised: report it as the stdlib's Handle._run does."""
        cb = _format_callback(handle._callback, handle._args, self.get_debug())
        context = {"message": f"Exception in callback {cb}", "exception": exc, "handle": handle}
        if handle._source_traceback:
            context["source_traceback"] = handle._source_traceback
        self.call_exception_handler(context)

    # -- executors and DNS -------------------------------------------------------------------

    def run_in_executor(self, executor, func, *args):
        self._check_closed()
        if self.get_debug():
            self._check_callback(func, "run_in_executor")
        if executor is None:
            executor = self._default_executor
            if self._executor_shutdown_called:
                raise RuntimeError("Executor shutdown has been called")
            if executor is None:
                executor = concurrent.futures.ThreadPoolExecutor(thread_name_prefix="asyncio")
                self._default_executor = executor
        return futures.wrap_future(executor.submit(func, *args), loop=self)

    def set_default_executor(self, executor):
        if not isinstance(executor, concurrent.futures.ThreadPoolExecutor):
            raise TypeError("executor must be ThreadPoolExecutor instance")
        self._default_executor = executor

    if _PY312:

        async def shutdown_default_executor(self, timeout=None):
            await self._shutdown_default_executor(timeout)

    else:

        async def shutdown_default_executor(self):
            await self._shutdown_default_executor(None)

    async def _shutdown_default_executor(self, timeout):
        self._executor_shutdown_called = True
        if self._default_executor is None:
            return
        future = self.create_future()
        thread = threading.Thread(target=self._do_shutdown, args=(future,))
        thread.start()
        try:
            if timeout is None:
                await future
            else:
                await tasks.wait_for(tasks.shield(future), timeout)
        except TimeoutError:
            warnings.warn(
                f"The executor did not finishing joining its threads within {timeout} seconds.",
                RuntimeWarning,
                stacklevel=3,
            )
            self._default_executor.shutdown(wait=False)
        else:
            thread.join()

    def _do_shutdown(self, future):
        try:
            self._default_executor.shutdown(wait=True)
            if not self.is_closed():
                self.call_soon_threadsafe(futures._set_result_unless_cancelled, future, None)
        except Exception as ex:
            if not self.is_closed() and not future.cancelled():
                self.call_soon_threadsafe(future.set_exception, ex)

    async def getnameinfo(self, sockaddr, flags=0):
        return await self.run_in_executor(None, socket.getnameinfo, sockaddr, flags)

    # -- fd callbacks ------------------------------------------------------------------------

    def add_reader(self, fd, callback, *args):
        self._check_closed()
        fileno = selectors._fileobj_to_fd(fd)
        self._ensure_fd_no_transport(fileno)
        _check_c_int(fileno)
        self._note_fileobj(fileno, fd)
        self._add_reader(fileno, callback, *args)

    def remove_reader(self, fd):
        fileno, closed = self._registered_fileno(fd)
        removed = self._remove_reader(fileno)
        self._forget_fileobj(fileno, closed)
        return removed

    def add_writer(self, fd, callback, *args):
        self._check_closed()
        fileno = selectors._fileobj_to_fd(fd)
        self._ensure_fd_no_transport(fileno)
        _check_c_int(fileno)
        self._note_fileobj(fileno, fd)
        self._add_writer(fileno, callback, *args)

    def remove_writer(self, fd):
        fileno, closed = self._registered_fileno(fd)
        removed = self._remove_writer(fileno)
        self._forget_fileobj(fileno, closed)
        return removed

    # A selector keeps the object an fd was first registered with until the fd is unregistered,
    # and finds a registration by that object when its `fileno()` no longer answers (a socket
    # closed while registered gives -1): removing it then still works. `_fileobjs` is that
    # memory, for registrations made with an object rather than an int.

    def _note_fileobj(self, fileno, fileobj):
        if isinstance(fileobj, int):
            self._forget_fileobj(fileno)
        elif self._fd_handles(fileno) == (None, None):
            self._fileobjs[fileno] = fileobj

    def _forget_fileobj(self, fileno, closed=False):
        if not self._fileobjs or fileno not in self._fileobjs:
            return
        if self._fd_handles(fileno) == (None, None):
            del self._fileobjs[fileno]
        elif closed:
            # Half of the registration of a closed object was removed and the other half stays.
            # The selector then modifies the fd's epoll entry, which the kernel already dropped
            # with the file: the OSError propagates and the selector forgets the whole
            # registration.
            self._remove_reader(fileno)
            self._remove_writer(fileno)
            del self._fileobjs[fileno]
            code = errno.ENOENT if _is_open(fileno) else errno.EBADF
            raise OSError(code, os.strerror(code))

    def _registered_fileno(self, fileobj):
        """The fd to remove a registration of, and whether `fileobj` no longer has one: its own
        fd, else the fd that `fileobj` was registered as (whose transports the selector loop
        does not check)."""
        try:
            fileno = selectors._fileobj_to_fd(fileobj)
        except ValueError:
            for fileno, obj in self._fileobjs.items():
                if obj is fileobj and self._fd_handles(fileno) != (None, None):
                    return fileno, True
            raise
        self._ensure_fd_no_transport(fileno)
        return fileno, False

    # -- signals -----------------------------------------------------------------------------

    def _check_signal(self, sig):
        if not isinstance(sig, int):
            raise TypeError(f"sig must be an int, not {sig!r}")
        if sig not in signal.valid_signals():
            raise ValueError(f"invalid signal number {sig}")

    def _make_self_pipe(self):
        self._ssock, self._csock = socket.socketpair()
        self._ssock.setblocking(False)
        self._csock.setblocking(False)
        self._add_reader(self._ssock.fileno(), self._read_from_self)

    def _close_self_pipe(self):
        if self._ssock is None:
            return
        self._remove_reader(self._ssock.fileno())
        self._ssock.close()
        self._csock.close()
        self._ssock = self._csock = None

    def _read_from_self(self):
        while True:
            try:
                data = self._ssock.recv(4096)
            except InterruptedError:
                continue
            except BlockingIOError:
                return
            if not data:
                return
            for signum in data:
                self._handle_signal(signum)

    def _handle_signal(self, sig):
        handle = self._signal_handlers.get(sig)
        if handle is None:
            return
        if handle.cancelled():
            self.remove_signal_handler(sig)
        else:
            # asyncio's Handle reports its own errors, as it does on the stdlib loop.
            self.call_soon(handle._run)

    def add_signal_handler(self, sig, callback, *args):
        if coroutines.iscoroutine(callback) or coroutines.iscoroutinefunction(callback):
            raise TypeError("coroutines cannot be used with add_signal_handler()")
        self._check_signal(sig)
        self._check_closed()
        if self._ssock is None:
            self._make_self_pipe()
        try:
            # Raises ValueError when this is not the main thread.
            signal.set_wakeup_fd(self._csock.fileno())
        except (ValueError, OSError) as exc:
            raise RuntimeError(str(exc))  # noqa: B904 (chained as the stdlib's)
        # asyncio's own Handle: it lives as long as the registration, and as a GC object it keeps
        # a cycle through the callback (e.g. loop.stop) collectable.
        handle = events.Handle(callback, args, self, None)
        self._signal_handlers[sig] = handle
        try:
            # The stdlib's no-op handler (code may compare `signal.getsignal()` with it): a
            # Python-level handler, so that the C handler writes the signal to the wakeup fd.
            signal.signal(sig, unix_events._sighandler_noop)
            # Don't let the signal interrupt blocking system calls made by callbacks.
            signal.siginterrupt(sig, False)
        except OSError as exc:
            del self._signal_handlers[sig]
            if not self._signal_handlers:
                self._clear_wakeup_fd()
            if exc.errno == errno.EINVAL:
                raise RuntimeError(f"sig {sig:d} cannot be caught")  # noqa: B904 (as the stdlib's)
            raise

    def remove_signal_handler(self, sig):
        self._check_signal(sig)
        try:
            del self._signal_handlers[sig]
        except KeyError:
            return False
        handler = signal.default_int_handler if sig == signal.SIGINT else signal.SIG_DFL
        try:
            signal.signal(sig, handler)
        except OSError as exc:
            if exc.errno == errno.EINVAL:
                raise RuntimeError(f"sig {sig:d} cannot be caught")  # noqa: B904 (as the stdlib's)
            raise
        if not self._signal_handlers:
            self._clear_wakeup_fd()
        return True

    @staticmethod
    def _clear_wakeup_fd():
        # No wakeup fd once the last handler goes, as on the stdlib loop: not the one set before
        # the first, which may be closed, or another file's, by now.
        try:
            signal.set_wakeup_fd(-1)
        except (ValueError, OSError) as exc:
            logger.info("set_wakeup_fd(-1) failed: %s", exc)
