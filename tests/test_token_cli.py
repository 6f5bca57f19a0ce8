"""``livestream-token``: what it mints, what it refuses, and a token it minted opening a real
``twistd -n livestream --auth-secret-file``."""

from __future__ import annotations

import configparser
import io
import os
import subprocess
import sys
from contextlib import redirect_stderr, redirect_stdout
from pathlib import Path

import jwt
from twisted.trial.unittest import SynchronousTestCase, TestCase

from livestream.auth.tokens import Grant, Verifier, read_secret
from livestream.cli.token import main
from tests.support.daemon import ROOT, Daemon, ended, stop
from tests.support.http import get
from tests.support.media import jpeg_frames
from tests.support.ports import free_port
from tests.support.websocket import CLOSE_MSG, connect_msg, open_client, stream_msg

SECRET = b"an operator's secret of 32 bytes or more"


def secret_file(testcase: SynchronousTestCase, content: bytes = SECRET) -> str:
    path = Path(testcase.mktemp()).absolute()
    path.write_bytes(content + b"\n")
    return os.fspath(path)


class MintTests(SynchronousTestCase):
    def mint(self, *argv: str) -> str:
        out = io.StringIO()
        with redirect_stdout(out):
            self.assertEqual(main(list(argv)), 0)
        return out.getvalue()

    def refused(self, *argv: str) -> str:
        err = io.StringIO()
        with redirect_stderr(err), redirect_stdout(io.StringIO()):
            self.assertEqual(self.assertRaises(SystemExit, main, list(argv)).code, 2)
        return err.getvalue()

    def test_round_trip(self) -> None:
        """The printed token is one line the daemon verifies with the same file, claim for
        claim."""
        path = secret_file(self)
        printed = self.mint(
            "--secret-file", path, "--scope", "publish read", "--scope", "publish",
            "--id", "cam-*", "--id", "mic-1", "--ttl", "15m", "--subject", "studio",
            "--max-seconds", "3600", "--max-bytes", "1000000",
        )  # fmt: skip
        self.assertEqual(printed.count("\n"), 1)
        token = printed.strip()
        grant = Verifier(read_secret(path)).verify(token)
        self.assertEqual(
            grant,
            Grant("studio", frozenset({"publish", "read"}), ("cam-*", "mic-1"), 3600, 1000000),
        )
        claims = jwt.decode(token, options={"verify_signature": False})
        self.assertEqual(claims["exp"] - claims["iat"], 900)
        self.assertEqual(claims["scope"], "publish read")

    def test_defaults(self) -> None:
        """One hour, any id, no limits of its own."""
        token = self.mint("--secret-file", secret_file(self), "--scope", "read").strip()
        claims = jwt.decode(token, options={"verify_signature": False})
        self.assertEqual(claims["exp"] - claims["iat"], 3600)
        self.assertEqual(set(claims), {"aud", "iat", "exp", "scope"})

    def test_ttl_units(self) -> None:
        path = secret_file(self)
        for ttl, seconds in (("90", 90), ("90s", 90), ("2h", 7200), ("7d", 604800)):
            claims = jwt.decode(self.mint("--secret-file", path, "--scope", "read", "--ttl", ttl)
                                .strip(), options={"verify_signature": False})  # fmt: skip
            self.assertEqual(claims["exp"] - claims["iat"], seconds, ttl)

    def test_refusals(self) -> None:
        """Each mistake is one usage error naming what to fix; nothing is printed on stdout."""
        path = secret_file(self)
        cases = [
            (["--scope", "read"], "--secret-file"),
            (["--secret-file", path], "--scope"),
            (["--secret-file", path, "--scope", "fly"], "unknown scope"),
            (["--secret-file", path, "--scope", "read", "--ttl", "0"], "duration"),
            (["--secret-file", path, "--scope", "read", "--ttl", "1y"], "duration"),
            (["--secret-file", path, "--scope", "read", "--max-bytes", "0"], "positive"),
            (["--secret-file", path, "--scope", "read", "--max-seconds", "x"], "positive"),
            (["--secret-file", "/nonexistent/s", "--scope", "read"], "/nonexistent/s"),
            (["--secret-file", secret_file(self, b"short"), "--scope", "read"], "at least 32"),
        ]
        for argv, hint in cases:
            self.assertIn(hint, self.refused(*argv), argv)

    def test_console_script_declared(self) -> None:
        """``pip install`` makes the ``livestream-token`` command from setup.cfg."""
        setup = configparser.ConfigParser()
        setup.read(ROOT / "setup.cfg")
        scripts = setup["options.entry_points"]["console_scripts"].split("\n")
        self.assertIn("livestream-token = livestream.cli.token:main", scripts)


class OperatorTests(TestCase):
    timeout = 60

    async def test_minted_token_opens_a_real_daemon(self) -> None:
        """The README's steps: make a secret, start the daemon with it, mint with the command,
        record and list with the token; the token never reaches the log."""
        workdir = Path(self.mktemp()).absolute()
        workdir.mkdir(parents=True)
        secret = workdir / "secret"
        secret.write_bytes(SECRET)
        daemon = Daemon(workdir, workdir / "media", free_port(),
                        "--auth-secret-file", os.fspath(secret))  # fmt: skip
        daemon.start()
        self.addCleanup(stop, daemon)
        minted = subprocess.run(
            [sys.executable, "-m", "livestream.cli.token", "--secret-file", os.fspath(secret),
             "--scope", "publish read", "--id", "cam-*"],
            env=dict(os.environ, PYTHONPATH=os.fspath(ROOT)),
            capture_output=True, check=True, timeout=30,
        )  # fmt: skip
        token = minted.stdout.decode().strip()
        await daemon.listening()

        self.assertEqual((await get(daemon.port, "/recordings")).code, 401)
        client = await open_client(daemon.port, f"/?token={token}")
        client.send(connect_msg("cam-1"))
        await client.event("CONNECTED")
        for frame in jpeg_frames(5):
            client.send(stream_msg("VIDEO", frame))
        client.send(CLOSE_MSG)
        name = (await client.event("CLOSED"))["recordings"]["video"]
        listing = await get(daemon.port, "/recordings", {"Authorization": f"Bearer {token}"})
        self.assertEqual((await listing.json())["video"], [name])
        self.assertEqual((await get(daemon.port, f"/recordings?token={token}")).code, 200)

        daemon.signal("TERM")
        await ended(daemon)
        log = daemon.output()
        self.assertIn("authentication on", log)
        self.assertIn("refused GET /recordings from 127.0.0.1: 401", log)
        self.assertIn("/recordings?token=- ", log)
        self.assertNotIn(token.split(".")[2], log)
