#!/usr/bin/env python3
"""Where `.ci/run`'s time goes, from its log: each phase (the `[ci]` lines), each test binary
(cargo's "Running ..." and "finished in N s"), and the build (the test phase less the tests).

    CI=true bash .ci/run > ci.log 2>&1; python3 bench/ci_breakdown.py ci.log
"""
import re
import sys


def main(path):
    phases, binaries, current = [], [], None
    for line in open(path, errors="replace"):
        m = re.match(r"\[ci\] (.+): (\d+) s \(total (\d+) s\)", line)
        if m:
            phases.append((m.group(1), int(m.group(2))))
            continue
        m = re.match(r"\s+Running (\S+)(?: (\S+))? \((.+)\)", line)
        if m:
            binary = re.sub(r"-[0-9a-f]{16}$", "", m.group(3).rsplit("/", 1)[-1])
            current = f"{binary} ({m.group(2) or m.group(1)})"
            continue
        m = re.match(r"\s+Doc-tests (\S+)", line)
        if m:
            current = f"doc-tests {m.group(1)}"
            continue
        m = re.match(r"test result: .* finished in ([\d.]+)s", line)
        if m and current:
            binaries.append((current, float(m.group(1))))
            current = None
    print("| phase | seconds |\n|---|---:|")
    for name, seconds in phases:
        print(f"| {name} | {seconds} |")
    tests = sum(s for _, s in binaries)
    test_phase = next((s for n, s in phases if n.startswith("build and run")), None)
    print(f"\n{len(binaries)} test binaries ran for {tests:.0f} s in all", end="")
    if test_phase is not None:
        print(f"; building them took about {test_phase - tests:.0f} s of the {test_phase} s phase", end="")
    print(".\n\n| test binary | seconds |\n|---|---:|")
    for name, seconds in sorted(binaries, key=lambda b: -b[1]):
        if seconds >= 1:
            print(f"| {name} | {seconds:.1f} |")
    print(f"| (the {sum(1 for _, s in binaries if s < 1)} others, under 1 s each) | {sum(s for _, s in binaries if s < 1):.1f} |")


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "/dev/stdin")
