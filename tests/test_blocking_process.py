"""Blocking calls under signals and processes: Ctrl-C, interpreter exit with threads, fork.

Each case runs in a fresh Python process (a real SIGINT must not reach the test
runner, and fork wants a process of its own), with the loopback test server in
a thread of that process. The script prints what it saw as JSON; the server's
own records (disconnects, connection ids) are the evidence.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from typing import Any

import pytest

BACKENDS = pytest.mark.parametrize("sync_backend", ["asyncio", "trio"])

PRELUDE = """
import json, os, signal, sys, threading, time
import mmstream as mm
from mmstream.providers.openai import OpenAI
from mmstream.testing import Script, TestServer, answer_text

def provider(server):
    return OpenAI(model="gpt-4o-mini", api_key="sk-test", base_url=server.url("/v1"))
"""


def run(script: str, *args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    """Run ``script`` (after the prelude) in a fresh interpreter."""
    code = PRELUDE + textwrap.dedent(script)
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    return subprocess.run(
        [sys.executable, "-c", code, *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env,
        cwd=os.getcwd(),
        check=False,
    )


def result_of(process: subprocess.CompletedProcess[str]) -> dict[str, Any]:
    assert process.returncode == 0, process.stderr[-3000:]
    return json.loads(process.stdout.strip().splitlines()[-1])  # type: ignore[no-any-return]


# --- Ctrl-C in a blocking call --------------------------------------------------------------

CTRL_C = """
backend, what = sys.argv[1], sys.argv[2]
result = {}
with TestServer.start_in_thread() as server:
    server.script = Script(chunks=300, pause=0.01)  # three seconds of answer
    llm = mm.MultiModalLLM(provider(server), sync_backend=backend)
    main = threading.main_thread().ident

    def interrupt_while_answering():
        while not server.requests:
            time.sleep(0.005)
        time.sleep(0.2)
        signal.pthread_kill(main, signal.SIGINT)  # a real Ctrl-C, to the main thread

    threading.Thread(target=interrupt_while_answering, daemon=True).start()
    try:
        if what == "complete":
            llm.complete("one two three")
        elif what == "chat":
            llm.chat(["one two three"])
        elif what == "next":  # waiting in next() for the following chunk
            for chunk in llm.stream_complete("one two three"):
                pass
        else:  # busy in the loop's own body
            for chunk in llm.stream_complete("one two three"):
                time.sleep(30)
        result["interrupted"] = False
    except KeyboardInterrupt:
        result["interrupted"] = True
        result["raised_at"] = time.monotonic()
    disconnect = server.wait_disconnect_blocking(timeout=2)
    result["disconnect_at"] = disconnect.monotonic
    result["chunks_sent"] = disconnect.chunks_sent
    server.script = Script()
    result["next_call"] = llm.complete("again").text == answer_text("again")
    llm.close()
print(json.dumps(result))
"""


@BACKENDS
@pytest.mark.parametrize("what", ["complete", "chat", "next", "loop-body"])
def test_ctrl_c_cancels_the_call_and_closes_its_connection(sync_backend: str, what: str) -> None:
    result = result_of(run(CTRL_C, sync_backend, what))
    assert result["interrupted"]
    assert result["chunks_sent"] < 300  # the server saw the client leave mid-answer ...
    assert result["disconnect_at"] - result["raised_at"] < 1.0  # ... by then, or within 1 s
    assert result["next_call"] is True


# --- Ctrl-C with other threads calling ------------------------------------------------------

THREADS_AT_EXIT = """
backend = sys.argv[1]
say = lambda line: os.write(1, (line + "\\n").encode())  # one write: lines never interleave
llm = mm.MultiModalLLM(mm.providers.Offline(chunks=2000, delay=0.02), sync_backend=backend)
started = threading.Barrier(5)

def stream(n):
    try:
        chunks = iter(llm.stream_complete(f"thread {n}"))
        next(chunks)
        started.wait()
        for chunk in chunks:  # forty seconds of answer
            pass
        say("finished")
    except BaseException as exc:
        say("ended with " + type(exc).__name__)

def call():
    try:
        started.wait()
        llm.complete("a blocking call")
        say("finished")
    except BaseException as exc:
        say("ended with " + type(exc).__name__)

threads = [threading.Thread(target=stream, args=(n,)) for n in range(3)]
threads.append(threading.Thread(target=call))
for thread in threads:
    thread.start()
started.wait()
time.sleep(0.2)
print("interrupting", flush=True)
signal.raise_signal(signal.SIGINT)  # Ctrl-C: the main thread ends with KeyboardInterrupt
time.sleep(60)
"""


@BACKENDS
def test_ctrl_c_ends_the_calls_of_other_threads_so_the_process_exits(sync_backend: str) -> None:
    process = run(THREADS_AT_EXIT, sync_backend, timeout=30)
    lines = process.stdout.splitlines()
    assert "interrupting" in lines, process.stderr[-3000:]
    assert lines.count("ended with ClosedError") == 4, process.stdout + process.stderr[-3000:]
    assert "KeyboardInterrupt" in process.stderr
    assert "CancelledError" not in process.stderr
    assert process.returncode != 0


NORMAL_EXIT = """
backend = sys.argv[1]
llm = mm.MultiModalLLM(mm.providers.Offline(chunks=40, delay=0.01), sync_backend=backend)
began = threading.Event()

def stream():
    chunks = iter(llm.stream_complete("one two"))
    next(chunks)
    began.set()
    print("finished", list(chunks)[-1].finish_reason, flush=True)

thread = threading.Thread(target=stream)
thread.start()
began.wait()
print("main returns", flush=True)
"""


@BACKENDS
def test_a_normal_exit_lets_other_threads_finish_their_calls(sync_backend: str) -> None:
    """Only Ctrl-C ends them: a main thread that returns waits for its threads, as always."""
    process = run(NORMAL_EXIT, sync_backend, timeout=30)
    assert process.returncode == 0, process.stderr[-3000:]
    assert process.stdout.splitlines() == ["main returns", "finished stop"]


# --- fork -----------------------------------------------------------------------------------

FORK = """
import multiprocessing, select
backend = sys.argv[1]
result = {}
with TestServer.start_in_thread() as server:
    llm = mm.MultiModalLLM(provider(server), sync_backend=backend)
    assert llm.complete("parent").text == answer_text("parent")
    parent_connection = server.requests[-1].connection_id
    before = len(server.requests)

    def in_child():
        seen = {"same_llm": llm.complete("child one").text == answer_text("child one")}
        seen["stream"] = list(llm.stream_complete("child two"))[-1].text == answer_text("child two")
        fresh = mm.MultiModalLLM(provider(server), sync_backend=backend)
        seen["new_llm"] = fresh.complete("child three").text == answer_text("child three")
        box = {}
        thread = threading.Thread(target=lambda: box.update(text=llm.complete("child four").text))
        thread.start()
        thread.join(20)
        seen["thread"] = box.get("text") == answer_text("child four")
        return seen

    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child
        os.close(read_end)
        try:
            payload = json.dumps(in_child())
        except BaseException as exc:
            payload = json.dumps({"error": repr(exc)})
        os.write(write_end, payload.encode())
        os._exit(0)
    os.close(write_end)
    ready, _, _ = select.select([read_end], [], [], 30)
    result["child"] = json.loads(os.read(read_end, 65536).decode()) if ready else "hung"
    os.waitpid(pid, 0)

    context = multiprocessing.get_context("fork")
    queue = context.Queue()
    worker = context.Process(
        target=lambda: queue.put(llm.complete("worker").text == answer_text("worker"))
    )
    worker.start()
    result["worker"] = queue.get(timeout=30)
    worker.join(10)

    child_requests = server.requests[before:]
    result["child_connections"] = sorted({r.connection_id for r in child_requests})
    result["parent_connection"] = parent_connection
    result["parent_again"] = llm.complete("parent again").text == answer_text("parent again")
    result["parent_again_connection"] = server.requests[-1].connection_id
    llm.close()
print(json.dumps(result))
"""


@BACKENDS
def test_a_forked_child_makes_blocking_calls_on_connections_of_its_own(sync_backend: str) -> None:
    result = result_of(run(FORK, sync_backend))
    assert result["child"] == {"same_llm": True, "stream": True, "new_llm": True, "thread": True}
    assert result["worker"] is True
    # Nothing of the parent's pool was used in a child ...
    assert result["parent_connection"] not in result["child_connections"]
    # ... and the parent's pooled connection is still its own.
    assert result["parent_again"] is True
    assert result["parent_again_connection"] == result["parent_connection"]
