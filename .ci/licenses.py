#!/usr/bin/env python3
"""Checks that every third-party crate tally builds with is permissively licensed.

docs/design.md §9: every dependency must be permissively licensed, and evalexpr must
stay at 11.3.1 (MIT), because evalexpr 12.0 and later are AGPL-3.0-only.

The dependency graph is cargo's own: `cargo metadata --format-version 1
--locked`, run in the repository root, with the features the manifests
enable by default and for every target and platform (so a crate used only on
Windows or macOS is checked too). Workspace members are ours and skipped.

A crate passes when its SPDX `license` expression has at least one
OR-alternative made only of the allowed licences below. `AND`, `OR`, `WITH`
and parentheses are understood, as is the legacy `/` of old crates, which
means OR (`MIT/Apache-2.0`). A crate without a `license` field (one that
only ships a `license-file`) fails unless EXCEPTIONS names its exact version
with the reason a person checked it. evalexpr at any version but 11.3.1
fails, in the graph or anywhere in Cargo.lock (which also records optional
dependencies that no default feature enables).

Output: one line per violation (crate, version, licence, why), then a summary
line. Exit status 0 when there is no violation, 1 when there is one, 2 when
cargo metadata itself fails.

Usage: python3 .ci/licenses.py [--metadata FILE]
  --metadata FILE  read cargo metadata's JSON from FILE instead of running cargo
                   (to test this script).
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

# SPDX ids (and `id WITH exception` pairs) that count as permissive. Compared
# case-insensitively, as SPDX says ids are. Deliberately absent: MPL-2.0 (file-level
# copyleft; no crate in the graph needs it as of this writing), the GPL family,
# Unlicense (only ever seen as an alternative to MIT here).
ALLOWED = {
    "MIT",
    "MIT-0",
    "Apache-2.0",
    "Apache-2.0 WITH LLVM-exception",
    "BSD-2-Clause",
    "BSD-3-Clause",
    "ISC",
    "Zlib",
    "Unicode-3.0",
    "Unicode-DFS-2016",
    "CC0-1.0",
    "0BSD",
    "BSL-1.0",
    # aws-lc-sys and ring carry OpenSSL's licence for code derived from OpenSSL.
    "OpenSSL",
}

# Crates allowed without a `license` field, by exact (name, version), each with
# the reason a person read its licence file. A new version must be checked
# again. Empty: every crate in the graph declares an SPDX expression.
EXCEPTIONS: dict[tuple[str, str], str] = {}

# evalexpr is the one crate pinned for licence reasons (docs/design.md §9).
EVALEXPR = "evalexpr"
EVALEXPR_VERSION = "11.3.1"

ROOT = Path(__file__).resolve().parent.parent

_ALLOWED_FOLDED = {a.casefold() for a in ALLOWED}


class ExpressionError(ValueError):
    pass


def _tokenize(expression: str) -> list[str]:
    # The legacy '/' separator means OR; give it and parentheses space to split on.
    spaced = re.sub(r"([()/])", r" \1 ", expression)
    return [("OR" if t == "/" else t) for t in spaced.split()]


class _Parser:
    """Recursive descent over: or := and (OR and)*; and := unit (AND unit)*;
    unit := '(' or ')' | ID [WITH ID]. Each node evaluates to (passes, disallowed ids)."""

    def __init__(self, tokens: list[str]):
        self.tokens = tokens
        self.pos = 0

    def peek(self) -> str | None:
        return self.tokens[self.pos] if self.pos < len(self.tokens) else None

    def take(self) -> str:
        token = self.peek()
        if token is None:
            raise ExpressionError("expression ends too early")
        self.pos += 1
        return token

    @staticmethod
    def is_operator(token: str | None, name: str) -> bool:
        return token is not None and token.upper() == name

    def parse(self) -> tuple[bool, set[str]]:
        result = self.parse_or()
        if self.peek() is not None:
            raise ExpressionError(f"unexpected {self.peek()!r}")
        return result

    def parse_or(self) -> tuple[bool, set[str]]:
        ok, bad = self.parse_and()
        while self.is_operator(self.peek(), "OR"):
            self.take()
            right_ok, right_bad = self.parse_and()
            ok = ok or right_ok
            bad |= right_bad
        return ok, bad

    def parse_and(self) -> tuple[bool, set[str]]:
        ok, bad = self.parse_unit()
        while self.is_operator(self.peek(), "AND"):
            self.take()
            right_ok, right_bad = self.parse_unit()
            ok = ok and right_ok
            bad |= right_bad
        return ok, bad

    def parse_unit(self) -> tuple[bool, set[str]]:
        token = self.take()
        if token == "(":
            result = self.parse_or()
            if self.take() != ")":
                raise ExpressionError("unbalanced parentheses")
            return result
        if token == ")" or any(self.is_operator(token, op) for op in ("AND", "OR", "WITH")):
            raise ExpressionError(f"expected a licence id, found {token!r}")
        licence = token
        if self.is_operator(self.peek(), "WITH"):
            self.take()
            exception = self.take()
            if exception in ("(", ")"):
                raise ExpressionError(f"expected an exception id after WITH, found {exception!r}")
            licence = f"{token} WITH {exception}"
        if licence.casefold() in _ALLOWED_FOLDED:
            return True, set()
        return False, {licence}


def check_expression(expression: str) -> tuple[bool, set[str]]:
    """Whether `expression` has an alternative of allowed licences only, and
    which ids in it are not allowed. Raises ExpressionError if malformed."""
    tokens = _tokenize(expression)
    if not tokens:
        raise ExpressionError("empty expression")
    return _Parser(tokens).parse()


def lock_versions(name: str, lock: Path | None = None) -> list[str]:
    """The versions of crate `name` that Cargo.lock records."""
    lock = lock or ROOT / "Cargo.lock"
    if not lock.exists():
        return []
    pattern = re.compile(r'^name = "' + re.escape(name) + r'"\nversion = "([^"]+)"', re.M)
    return pattern.findall(lock.read_text())


def violations(metadata: dict) -> tuple[list[str], list[str]]:
    """Returns the violation lines and the crates checked, as "name version"."""
    members = set(metadata.get("workspace_members") or [])
    packages = {package["id"]: package for package in metadata["packages"]}
    resolve = metadata.get("resolve")
    if resolve is None:
        raise SystemExit("licenses: cargo metadata returned no resolved graph (--no-deps?)")
    ids = sorted(
        (node["id"] for node in resolve["nodes"] if node["id"] not in members),
        key=lambda i: (packages[i]["name"], packages[i]["version"]),
    )

    lines: list[str] = []
    for package_id in ids:
        package = packages[package_id]
        name, version = package["name"], package["version"]
        licence = package.get("license")
        where = f"{name} {version}"

        if name == EVALEXPR and version != EVALEXPR_VERSION:
            lines.append(
                f"{where}: licence {licence!r}: evalexpr must be exactly {EVALEXPR_VERSION} "
                f"(MIT); 12.0 and later are AGPL-3.0-only. Pin evalexpr = \"={EVALEXPR_VERSION}\" "
                "and find what pulls this version in with `cargo tree -i evalexpr`."
            )
            continue

        if not licence:
            if (name, version) in EXCEPTIONS:
                continue
            licence_file = package.get("license_file")
            detail = f" (only a license-file: {licence_file})" if licence_file else ""
            lines.append(
                f"{where}: no SPDX licence{detail}; read its licence and, if permissive, "
                "add it to EXCEPTIONS in .ci/licenses.py with the reason"
            )
            continue

        try:
            ok, disallowed = check_expression(licence)
        except ExpressionError as error:
            lines.append(f"{where}: licence {licence!r} is not a valid SPDX expression: {error}")
            continue
        if not ok:
            lines.append(
                f"{where}: licence {licence!r} is not permissive "
                f"(not allowed: {', '.join(sorted(disallowed))})"
            )

    # Cargo.lock also records crates behind features nothing enables by default;
    # an AGPL evalexpr there is one `--features` away from a build, so it fails too.
    seen = {(packages[i]["name"], packages[i]["version"]) for i in ids}
    for version in lock_versions(EVALEXPR):
        if version != EVALEXPR_VERSION and (EVALEXPR, version) not in seen:
            lines.append(
                f"{EVALEXPR} {version}: in Cargo.lock (behind a feature not enabled by default): "
                f"evalexpr must be exactly {EVALEXPR_VERSION} (MIT); 12.0 and later are "
                f"AGPL-3.0-only. Pin evalexpr = \"={EVALEXPR_VERSION}\"."
            )

    for (name, version), reason in sorted(EXCEPTIONS.items()):
        if not any(packages[i]["name"] == name and packages[i]["version"] == version for i in ids):
            print(f"licenses: note: exception for {name} {version} ({reason}) is no longer used")
    return lines, [f"{packages[i]['name']} {packages[i]['version']}" for i in ids]


def main(argv: list[str]) -> int:
    if len(argv) == 2 and argv[0] == "--metadata":
        metadata = json.loads(Path(argv[1]).read_text())
    elif not argv:
        run = subprocess.run(
            ["cargo", "metadata", "--format-version", "1", "--locked"],
            cwd=ROOT,
            stdout=subprocess.PIPE,
            text=True,
        )
        if run.returncode != 0:
            print(f"licenses: cargo metadata failed (exit {run.returncode})", file=sys.stderr)
            return 2
        metadata = json.loads(run.stdout)
    else:
        print("usage: " + __doc__.split("Usage: ", 1)[1].strip(), file=sys.stderr)
        return 2

    lines, checked = violations(metadata)
    for line in lines:
        print(f"licenses: {line}")
    evalexpr = [c for c in checked if c.split()[0] == EVALEXPR] or [f"{EVALEXPR} not in the graph"]
    summary = f"{len(checked)} third-party crates checked; {', '.join(evalexpr)}"
    if lines:
        print(f"licenses: FAILED: {len(lines)} violation(s); {summary}")
        return 1
    print(f"licenses: ok: no violations; {summary}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
