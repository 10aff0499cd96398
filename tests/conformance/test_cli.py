"""Running scripts: ``python -m ferroloop script.py args`` (plain ``python`` for the stdlib)."""

import json

# The child prints one JSON line describing what it saw.  It does not import
# ferroloop itself: only the launcher may have done that.
_REPORT = """
import asyncio, json, sys

async def main():
    loop = asyncio.get_running_loop()
    await asyncio.sleep(0.001)
    fl = sys.modules.get("ferroloop")
    return {
        "type": type(loop).__module__ + "." + type(loop).__qualname__,
        "is_ferroloop": fl is not None and isinstance(loop, fl.Loop),
        "is_selector": isinstance(loop, asyncio.SelectorEventLoop),
        "argv": sys.argv,
        "name": __name__,
        "file": __file__,
    }

if __name__ == "__main__":
    print(json.dumps(asyncio.run(main())))
"""


def _report(result):
    assert result.returncode == 0, result.stderr
    lines = [line for line in result.stdout.splitlines() if line.startswith("{")]
    assert len(lines) == 1, result.stdout
    return json.loads(lines[0])


def _assert_expected_loop(report, loop_kind):
    if loop_kind == "ferroloop":
        assert report["is_ferroloop"], report["type"]
    else:
        assert report["is_selector"], report["type"]


def test_script_runs_on_expected_loop(script, loop_kind):
    report = _report(script.run(_REPORT, ["first", "--flag", "two words"], prelude=False))
    _assert_expected_loop(report, loop_kind)
    assert report["name"] == "__main__"
    assert report["argv"][0].endswith("script.py")
    assert report["argv"][1:] == ["first", "--flag", "two words"]
    assert report["file"].endswith("script.py")


def test_script_without_args(script, loop_kind):
    report = _report(script.run(_REPORT, prelude=False))
    _assert_expected_loop(report, loop_kind)
    assert len(report["argv"]) == 1


def test_script_exit_code_propagates(script):
    result = script.run(
        """
        import sys
        async def main():
            await asyncio.sleep(0)
            return 7
        sys.exit(asyncio.run(main()))
        """
    )
    assert result.returncode == 7, result.stderr


def test_script_exception_reported(script):
    result = script.run(
        """
        async def main():
            raise LookupError("raised-in-script")
        asyncio.run(main())
        """
    )
    assert result.returncode == 1
    assert "LookupError: raised-in-script" in result.stderr


def test_script_stdin_stdout(script):
    result = script.run(
        """
        import sys
        print("out-line")
        print("err-line", file=sys.stderr)
        """
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "out-line"
    assert "err-line" in result.stderr


def test_isolated_test_case_in_script(script):
    result = script.run(
        """
        import unittest

        class Case(unittest.IsolatedAsyncioTestCase):
            async def asyncSetUp(self):
                self.setup_loop = asyncio.get_running_loop()

            async def test_loop_type(self):
                loop = asyncio.get_running_loop()
                print("LOOP-OK" if isinstance(loop, LOOP_TYPE) else f"LOOP-WRONG {type(loop)!r}")
                self.assertIs(loop, self.setup_loop)

            async def test_gather(self):
                results = await asyncio.gather(*(asyncio.sleep(0.001, i) for i in range(10)))
                self.assertEqual(results, list(range(10)))

        if __name__ == "__main__":
            unittest.main()
        """,
        ["-v"],
    )
    assert result.returncode == 0, result.stderr
    assert "LOOP-OK" in result.stdout, result.stdout
    assert "Ran 2 tests" in result.stderr
    assert "OK" in result.stderr


def test_script_uses_plain_run_on_each_call(script):
    result = script.run(
        """
        loops = []
        async def main():
            loops.append(asyncio.get_running_loop())
        asyncio.run(main())
        asyncio.run(main())
        print(all(isinstance(lp, LOOP_TYPE) for lp in loops), loops[0] is not loops[1],
              all(lp.is_closed() for lp in loops))
        """
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["True", "True", "True"]


def test_script_runner_class(script):
    result = script.run(
        """
        async def main():
            return isinstance(asyncio.get_running_loop(), LOOP_TYPE)
        with asyncio.Runner() as runner:
            print(runner.run(main()))
        """
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "True"


def test_script_with_explicit_entry_point(script):
    # The run() of the prelude is asyncio.run / ferroloop.run.
    result = script.run(
        """
        async def main():
            return isinstance(asyncio.get_running_loop(), LOOP_TYPE)
        print(run(main()))
        """,
        via_main=False,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "True"


def test_script_directory_in_sys_path(script, tmp_path):
    # Like ``python script.py``: the script's own directory is importable even
    # when the working directory is elsewhere.
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "sibling_module.py").write_text("VALUE = 'sibling'\n")
    (tmp_path / "elsewhere").mkdir()
    result = script.run(
        """
        import sibling_module
        print(sibling_module.VALUE)
        """,
        name="sub/script.py",
        cwd=tmp_path / "elsewhere",
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "sibling"
