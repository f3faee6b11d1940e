"""`mise run setup-supabase-env`: write DB_URL into mlx-local/.env without showing the password.

Run from the repository root: `.venv/bin/python scripts/supabase_env.py`.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

from dotenv import dotenv_values

from shared.redact import mask_url

ASSIGNMENT = re.compile(r"^\s*(?:export\s+)?DB_URL\s*=")


class SetupError(Exception):
    """No database URL could be found; the message says where we looked."""


def from_supabase_cli(run=subprocess.run) -> str | None:
    """DB_URL from `supabase status -o env`, when the Supabase CLI is installed and running."""
    if shutil.which("supabase") is None:
        return None
    try:
        result = run(["supabase", "status", "-o", "env"], capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.TimeoutExpired):
        return None
    if result.returncode != 0:
        return None
    for line in result.stdout.splitlines():
        name, _, value = line.partition("=")
        if name.strip() == "DB_URL":
            return value.strip().strip('"').strip("'") or None
    return None


def from_loader_env(loader_env: Path) -> str | None:
    """SUPABASE_DB_URL from loader/.env."""
    if not loader_env.exists():
        return None
    return dotenv_values(loader_env).get("SUPABASE_DB_URL") or None


def write_db_url(env_file: Path, url: str) -> None:
    """Set DB_URL in `env_file`, keeping every other line as it was."""
    lines = env_file.read_text().splitlines() if env_file.exists() else []
    quoted = '"' + url.replace("\\", "\\\\").replace('"', '\\"') + '"'
    kept = [line for line in lines if not ASSIGNMENT.match(line)]
    insert_at = next((i for i, line in enumerate(lines) if ASSIGNMENT.match(line)), len(kept))
    kept.insert(min(insert_at, len(kept)), f"DB_URL={quoted}")
    env_file.parent.mkdir(parents=True, exist_ok=True)
    env_file.write_text("\n".join(kept) + "\n")
    env_file.chmod(0o600)


def setup(repo: Path, run=subprocess.run) -> tuple[str, str]:
    """Find the URL (Supabase CLI first, then loader/.env), write it; return (masked URL, source)."""
    url = from_supabase_cli(run)
    source = "supabase status"
    if url is None:
        url = from_loader_env(repo / "loader" / ".env")
        source = "SUPABASE_DB_URL in loader/.env"
    if url is None:
        raise SetupError(
            "no database URL found: the Supabase CLI is not installed or not running "
            "(`supabase status -o env`), and loader/.env has no SUPABASE_DB_URL"
        )
    write_db_url(repo / "mlx-local" / ".env", url)
    return mask_url(url), source


def main() -> None:
    """Entry point for the mise task."""
    repo = Path(__file__).resolve().parents[1]
    try:
        shown, source = setup(repo)
    except SetupError as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(1)
    print(f"wrote DB_URL={shown} to mlx-local/.env (from {source})")


if __name__ == "__main__":
    main()
