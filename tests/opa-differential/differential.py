#!/usr/bin/env python3
"""Differential check: `countersign test` against OPA's Go engine, verdict by verdict.

Usage:
  differential.py [--countersign BIN] [--reference opa|all-pass] [--v0-compatible] [-b] PATH...

Runs `countersign test --format json PATH...`, then computes OPA's verdict for every test:
  --reference opa       evaluate each test rule with OPA's own engine (Go, v1.x), loaded from
                        the PyPI wheel `opa-golib-python-bindings` (set OPA_BINDINGS to the
                        directory holding the unpacked `opa_bindings` package). Rego v1 only.
  --reference all-pass  for Rego v0 libraries, which those bindings cannot parse: the reference
                        verdict is PASS for every test (use it only at a commit whose CI runs
                        `opa test` green), and SKIPPED for `todo_test_*`.
Prints one line per mismatch and a summary; exits 1 when any verdict differs. Fetches nothing.
"""
import argparse, json, os, re, subprocess, sys

def countersign_results(binary, paths, v0, bundle):
    cmd = [binary, "test", "--format", "json"] + (["--v0-compatible"] if v0 else []) + (["-b"] if bundle else []) + paths
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode == 1:
        sys.exit(f"countersign could not load {paths}: {proc.stderr.strip()}")
    results = {}
    for r in json.loads(proc.stdout):
        verdict = "ERROR" if "error" in r else "FAIL" if r.get("fail") else "SKIPPED" if r.get("skip") else "PASS"
        results[f'{r["package"]}.{r["name"]}'] = (verdict, r.get("error", {}).get("message", ""), r["location"])
    return results

def rego_files(paths):
    for path in paths:
        if os.path.isfile(path):
            yield path, "" 
            continue
        for dirpath, dirs, files in os.walk(path):
            dirs.sort()
            for f in sorted(files):
                yield os.path.join(dirpath, f), os.path.relpath(dirpath, path)

def split_duplicates(paths):
    """OPA's tester evaluates every definition of a test on its own (`test_x`, `test_x#01`, ...,
    numbered per package in module order). The bindings evaluate documents, where the
    definitions would merge, so for the reference each later definition of a test whose head
    starts a line is renamed `test_x__dupNN` and `data.pkg.test_x#NN` is evaluated as that."""
    sources, seen = {}, {}
    for file, _ in sorted(rego_files(paths)):
        if not file.endswith(".rego"):
            continue
        source = open(file).read()
        package = re.search(r"^package\s+(\S+)", source, re.M)
        package = f"data.{package.group(1)}" if package else ""

        def rename(match):
            key = (package, match.group(1))
            seen[key] = seen.get(key, 0) + 1
            return match.group(1) if seen[key] == 1 else f"{match.group(1)}__dup{seen[key] - 1:02}"
        sources[file] = re.sub(r"^(test_\w+)\b", rename, source, flags=re.M)
    return sources

def opa_verdicts(paths, names, batch):
    sys.path.insert(0, os.environ.get("OPA_BINDINGS", "/tmp/opadl/x"))
    from opa_bindings.engine import OpaEngine, OpaError, OpaUndefinedError
    sources = split_duplicates(paths)

    def new_engine():
        eng = OpaEngine()
        eng.print_handler = lambda message, location: None
        for file, rel in rego_files(paths):
            base = os.path.basename(file)
            if file.endswith(".rego"):
                eng.add_policy(file, sources[file])
            elif base in ("data.json", "data.yaml", "data.yml"):
                doc = json.load(open(file)) if base.endswith(".json") else __import__("yaml").safe_load(open(file))
                prefix = "" if rel in (".", "") else rel.replace(os.sep, ".")
                eng.add_data(doc, prefix)
        return eng

    # The bindings keep every distinct query prepared (a compiled copy each) for the engine's
    # life; a fresh engine every `batch` tests keeps memory bounded on big libraries.
    eng, evaluated = None, 0
    verdicts = {}
    for name in names:
        if re.search(r"\.todo_test_", name):
            verdicts[name] = ("SKIPPED", "")
            continue
        query = re.sub(r"#(\d+)$", r"__dup\1", name)[len("data."):]
        if eng is None or evaluated == batch:
            if eng is not None:
                eng.close()
            eng, evaluated = new_engine(), 0
        evaluated += 1
        try:
            value = eng.eval_document(query)
            verdicts[name] = ("PASS" if value is True else "FAIL", "" if value is True else f"value {json.dumps(value)[:80]}")
        except OpaUndefinedError:
            verdicts[name] = ("FAIL", "undefined")
        except OpaError as error:
            verdicts[name] = ("ERROR", str(error)[:200])
    if eng is not None:
        eng.close()
    return verdicts

def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("paths", nargs="+")
    parser.add_argument("--countersign", default=os.path.join(os.path.dirname(__file__), "../../target/debug/countersign"))
    parser.add_argument("--reference", choices=["opa", "all-pass"], default="opa")
    parser.add_argument("--v0-compatible", action="store_true")
    parser.add_argument("-b", "--bundle", action="store_true")
    parser.add_argument("--opa-batch", type=int, default=50,
                        help="tests evaluated per OPA engine before a fresh one is built (memory bound)")
    args = parser.parse_args()
    ours = countersign_results(args.countersign, args.paths, args.v0_compatible, args.bundle)
    # Tests the sources declare (a textual scan) that countersign did not report are a discovery gap.
    declared = 0
    for file, _ in rego_files(args.paths):
        if file.endswith(".rego"):
            declared += len(set(re.findall(r"^(?:todo_)?test_\w+", open(file).read(), re.M)))
    if args.reference == "opa":
        reference = opa_verdicts(args.paths, list(ours), args.opa_batch)
    else:
        reference = {n: ("SKIPPED" if ".todo_test_" in n else "PASS", "CI verdict") for n in ours}
    matching = mismatches = unchecked = 0
    for name, (verdict, message, location) in sorted(ours.items()):
        expected, why = reference[name]
        if expected == "UNCHECKED":
            unchecked += 1
        elif expected == verdict:
            matching += 1
        else:
            mismatches += 1
            print(f"MISMATCH {name} ({location['file']}:{location['row']}): countersign {verdict} {message[:160]!r}; OPA {expected} {why!r}")
    print(f"tests: {len(ours)} (distinct test names declared in sources: {declared}); "
          f"matching: {matching}; mismatching: {mismatches}; unchecked: {unchecked}")
    sys.exit(1 if mismatches else 0)

if __name__ == "__main__":
    main()
