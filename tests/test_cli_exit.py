"""The `manage-runs` console script ends its process as soon as a command is done
(`ops.cli_core.exit_at_once`), without losing what a normal exit gives: every byte of output,
the exit status, a message given to SystemExit, and a quiet end when the reader closed the pipe."""

from __future__ import annotations

import subprocess
import textwrap

from tests.servers import PYTHON, ROOT, process_env

SCRIPT = textwrap.dedent("""
    import sys, click
    from ops.cli_core import exit_at_once

    @click.command()
    @click.argument("how")
    def command(how):
        if how == "big":
            sys.stdout.write("x" * 300_000 + "\\nend\\n")  # more than a pipe holds: flushed at exit
        elif how == "message":
            sys.exit("the message of SystemExit")
        elif how == "code":
            sys.exit(4)
        else:
            print("done")

    exit_at_once(command)
""")


def _run(*args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([PYTHON, "-c", SCRIPT, *args], cwd=ROOT, env=process_env(), capture_output=True, text=True,
                          timeout=60, input=stdin)


def test_every_byte_of_a_large_output_arrives() -> None:
    done = _run("big")
    assert done.returncode == 0 and done.stdout.endswith("x\nend\n") and len(done.stdout) == 300_005


def test_exit_codes_and_a_systemexit_message_are_kept() -> None:
    plain = _run("plain")
    assert plain.returncode == 0 and plain.stdout == "done\n"
    assert _run("code").returncode == 4
    message = _run("message")
    assert message.returncode == 1 and message.stderr.strip() == "the message of SystemExit"
    usage = _run()  # click's usage error: its own message and status 2
    assert usage.returncode == 2 and "Missing argument 'HOW'" in usage.stderr


def test_a_reader_that_closes_the_pipe_early_gets_no_traceback() -> None:
    child = subprocess.Popen([PYTHON, "-c", SCRIPT, "big"], cwd=ROOT, env=process_env(), stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE)
    assert child.stdout is not None and child.stderr is not None
    child.stdout.read(10)
    child.stdout.close()  # as `manage-runs list | head -1` does
    err = child.stderr.read().decode()
    child.wait(timeout=60)
    assert "Traceback" not in err


def test_the_console_script_names_itself_in_its_usage() -> None:
    done = subprocess.run([PYTHON, "-m", "ops.cli", "no-such-command"], cwd=ROOT, env=process_env(),
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 2 and "Try 'manage-runs --help' for help." in done.stderr
