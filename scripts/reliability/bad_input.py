#!/usr/bin/env python3
"""Sends the bad-input corpus (corpus.py) to the real system: the API and
one worker on a private PostgreSQL and file storage. Each case must get its
documented 4xx, or end as a job with its documented status and per-document
codes, within a time bound; the worker's peak RSS (VmHWM) must stay under a
bound; and a good document sent after the corpus must still succeed.

Usage: bad_input.py --bin TARGET/debug [--max-rss-mib N]
"""

import argparse
import json
import pathlib
import shutil
import sys
import time

import corpus
import harness
from harness import log, wait_until

# Every request must be answered within this, and every job finish within JOB_SECS.
HTTP_SECS = 30
JOB_SECS = 120
MAX_UPLOAD = 20 * 1024 * 1024


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--bin", required=True)
    ap.add_argument("--max-rss-mib", type=int, default=512,
                    help="bound on the worker's peak resident memory")
    ap.add_argument("--max-api-rss-mib", type=int, default=384,
                    help="bound on the API's peak resident memory")
    args = ap.parse_args()
    work = pathlib.Path(harness.tempdir("paperhook-bad-input-"))
    pg = harness.Postgres(work)
    secrets = {}
    receiver = harness.Receiver(secrets, 5)
    system = harness.System(args.bin, work, {
        "DATABASE_URL": pg.url,
        "PAPERHOOK_STORAGE_URL": f"file://{work}/storage",
        "PAPERHOOK_MAX_UPLOAD_BYTES": str(MAX_UPLOAD),
        "PAPERHOOK_WORKER_CONCURRENCY": "2",
    })
    failures = []
    try:
        system.start(workers=1)
        account = system.account("Bad input", 100000, harness.template(receiver.url, "Bad input"))
        secrets[account["template"]] = account["secret"]
        key, tid = account["key"], account["template"]
        worker = system.procs["worker-0"]
        jobs = []
        for case in corpus.cases(tid):
            name, expect = case["name"], case["expect"]
            if "file" in case:
                status, body, secs = system.api.submit(key, tid, name, case["file"], timeout=HTTP_SECS)
            else:
                ctype, raw = case["request"]
                status, body, secs = system.api.call("POST", "/process-job", key, raw,
                                                     headers={"content-type": ctype}, timeout=HTTP_SECS)
            code = body.get("error", {}).get("code") if isinstance(body, dict) else None
            if expect[0] == "http":
                if (status, code) != expect[1:]:
                    failures.append(f"{name}: answered {status} {code}, expected {expect[1]} {expect[2]}: {body}")
            elif status != 202:
                failures.append(f"{name}: answered {status} {code} ({body}), expected 202")
            else:
                jobs.append((case, body["job_id"]))
            log(f"{name:32} {status} {code or (body or {}).get('job_id') if isinstance(body, dict) else body} in {secs:.2f} s")

        def all_finished():
            system.sample_rss()
            rows = pg.query("SELECT count(*) FROM jobs WHERE finished_at IS NULL")
            return int(rows[0][0]) == 0

        started = time.monotonic()
        try:
            wait_until("every corpus job to finish", all_finished, JOB_SECS, 0.5)
        except TimeoutError as e:
            failures.append(str(e))
        log(f"corpus jobs finished in {time.monotonic() - started:.1f} s")

        for case, job in jobs:
            _, want_status, want_code, want_docs = case["expect"]
            status, st, _ = system.api.call("GET", f"/job-status?job_id={job}", key)
            got_code = (st.get("error") or {}).get("code")
            docs = [(d.get("error") or {}).get("code") for d in st.get("documents", [])]
            secs = pg.query(f"SELECT extract(epoch FROM finished_at - created_at) FROM jobs WHERE id = '{job}'")[0][0]
            ok = (st.get("status"), got_code, docs) == (want_status, want_code, want_docs)
            shown = docs if len(docs) < 10 else f"{len(docs)} x {sorted(set(map(str, docs)))}"
            log(f"{case['name']:32} {st.get('status')} {got_code} {shown} in {float(secs or 0):.1f} s")
            if not ok:
                failures.append(f"{case['name']}: ended {st.get('status')} {got_code} {shown}, "
                                f"expected {want_status} {want_code} {want_docs if len(want_docs) < 10 else len(want_docs)}")
            if secs and float(secs) > JOB_SECS:
                failures.append(f"{case['name']}: took {float(secs):.0f} s")

        # The worker is the same process, and still serves.
        status, body, _ = system.api.submit(key, tid, "after.pdf", (harness.ROOT / "examples" / "invoice.pdf").read_bytes())
        assert status == 202, (status, body)

        def good_done():
            s, st, _ = system.api.call("GET", f"/job-status?job_id={body['job_id']}", key)
            return st.get("status") in ("SUCCESS", "FAILED") and st

        st = wait_until("a good document after the corpus", good_done, 60, 0.5)
        if st["status"] != "SUCCESS":
            failures.append(f"a good document after the corpus ended {st['status']}: {st}")
        if worker.poll() is not None:
            failures.append(f"the worker exited (status {worker.returncode}) while processing the corpus")
        else:
            # The worker counted every document it finished, however it
            # ended: ZIP entries rejected while unpacking, a broken ZIP's
            # upload, extractions that failed or succeeded.
            # (A counter goes up just after its commit: polled.)
            def counts():
                stored = list(map(int, pg.query(
                    "SELECT count(*) FILTER (WHERE error_code IS NOT NULL), count(*) FILTER (WHERE error_code IS NULL)"
                    " FROM documents WHERE finished_at IS NOT NULL")[0]))
                counted = [int(system.metric("worker-0", f'paperhook_documents_processed_total{{outcome="{o}"}}'))
                           for o in ("failed", "success")]
                return stored, counted

            try:
                wait_until("the worker's document counters to match the database",
                           lambda: (lambda c: c[0] == c[1])(counts()), 10, 0.5)
            except TimeoutError:
                pass
            stored, counted = counts()
            log(f"documents failed/succeeded: {stored} in the database, {counted} counted by the worker")
            if stored != counted:
                failures.append(f"the worker counted {counted} documents failed/succeeded; the database has {stored}")
        system.sample_rss()
        peak = system.peak_rss_kib.get("worker-0", 0) / 1024
        log(f"worker peak RSS (VmHWM): {peak:.0f} MiB (bound {args.max_rss_mib} MiB)")
        if peak > args.max_rss_mib:
            failures.append(f"the worker's peak RSS was {peak:.0f} MiB, over {args.max_rss_mib} MiB")
        api_peak = system.peak_rss_kib.get("api", 0) / 1024
        log(f"API peak RSS (VmHWM): {api_peak:.0f} MiB (bound {args.max_api_rss_mib} MiB)")
        if api_peak > args.max_api_rss_mib:
            failures.append(f"the API's peak RSS was {api_peak:.0f} MiB, over {args.max_api_rss_mib} MiB")
        print(json.dumps({"cases": len(corpus.cases(tid)), "jobs": len(jobs),
                          "worker_peak_rss_mib": round(peak), "api_peak_rss_mib": round(api_peak),
                          "failures": len(failures)}))
    finally:
        if failures:
            print("\nFAILED:")
            for f in failures:
                print(f"  - {f}")
            system.tail_logs()
        system.stop()
        receiver.close()
        pg.close()
        if not failures:
            shutil.rmtree(work, ignore_errors=True)
    sys.exit(1 if failures else 0)


if __name__ == "__main__":
    main()
