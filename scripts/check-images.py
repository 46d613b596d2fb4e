#!/usr/bin/env python3
"""Checks that every runtime image of the Dockerfile holds the shared
libraries its binary links: each library a binary (as built here) needs
must come from the Debian base image or from a package its stage (or a
stage it builds on) installs, directly or as a dependency. An API image
without libtesseract.so.5 cannot start at all.

Usage: check-images.py DOCKERFILE BINDIR
Needs readelf, ldconfig, dpkg and apt-cache (Debian, as the images are).
"""

import platform
import re
import subprocess
import sys

# What debian:bookworm-slim has before any apt-get install.
BASE_PACKAGES = {"libc6", "libgcc-s1", "libstdc++6", "zlib1g"}


def stages(dockerfile):
    """name -> (base stage or image, apt packages, binaries copied in)."""
    text = re.sub(r"\\\n", " ", open(dockerfile).read())
    out, current = {}, None
    for line in text.splitlines():
        line = line.strip()
        m = re.match(r"FROM\s+(\S+)\s+AS\s+(\S+)", line, re.I)
        if m:
            current = m.group(2)
            out[current] = (m.group(1), set(), [])
            continue
        if current is None:
            continue
        for install in re.findall(r"apt-get install ([^&]*)", line):
            out[current][1].update(w for w in install.split() if not w.startswith("-"))
        m = re.match(r"COPY\s+--from=builder\s+(.*)\s+\S+$", line)
        if m:
            out[current][2].extend(p.rsplit("/", 1)[-1] for p in m.group(1).split())
    return out


def packages_of(name, all_stages):
    base, pkgs, _ = all_stages[name]
    return pkgs | (packages_of(base, all_stages) if base in all_stages else set())


def closure(pkgs):
    if not pkgs:
        return set()
    out = subprocess.run(
        ["apt-cache", "depends", "--recurse", "--no-recommends", "--no-suggests", "--no-conflicts",
         "--no-breaks", "--no-replaces", "--no-enhances", *sorted(pkgs)],
        check=True, capture_output=True, text=True).stdout
    return {line.strip() for line in out.splitlines() if not line.startswith(" ") and "<" not in line}


def needed(binary):
    out = subprocess.run(["readelf", "-d", binary], check=True, capture_output=True, text=True).stdout
    return re.findall(r"\(NEEDED\)\s+Shared library: \[(.+?)\]", out)


def package_of(lib, cache):
    # The entry for this machine's architecture (as ldconfig names it),
    # else any.
    arch = {"x86_64": "x86-64", "aarch64": "AArch64"}.get(platform.machine(), "")
    lines = [line for line in cache.splitlines() if line.strip().startswith(lib + " ")]
    native = [line for line in lines if arch and arch in line]
    chosen = (native or lines or [None])[0]
    path = chosen.split("=>")[-1].strip() if chosen else None
    if path is None:
        return None
    # A merged /usr: ldconfig and the package may name /lib or /usr/lib.
    for candidate in (path, re.sub(r"^/lib/", "/usr/lib/", path), re.sub(r"^/usr/lib/", "/lib/", path)):
        out = subprocess.run(["dpkg", "-S", candidate], capture_output=True, text=True)
        if out.returncode == 0:
            return out.stdout.split(":", 1)[0].strip()
    return None


def main():
    dockerfile, bindir = sys.argv[1], sys.argv[2]
    all_stages = stages(dockerfile)
    cache = subprocess.run(["ldconfig", "-p"], check=True, capture_output=True, text=True).stdout
    failures = []
    checked = 0
    for name, (_, _, binaries) in all_stages.items():
        if name == "builder" or not binaries:
            continue
        available = BASE_PACKAGES | closure(packages_of(name, all_stages))
        for binary in binaries:
            for lib in needed(f"{bindir}/{binary}"):
                checked += 1
                pkg = package_of(lib, cache)
                if pkg is None:
                    failures.append(f"{name}: {binary} needs {lib}, which no Debian package here provides")
                elif pkg not in available:
                    failures.append(f"{name}: {binary} needs {lib} (package {pkg}), which the image does not install")
    for f in failures:
        print(f, file=sys.stderr)
    print(f"images: {checked} shared libraries of {sum(len(s[2]) for s in all_stages.values())} binaries checked, "
          f"{len(failures)} missing")
    sys.exit(1 if failures else 0)


if __name__ == "__main__":
    main()
