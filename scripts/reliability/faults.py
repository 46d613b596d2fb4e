#!/usr/bin/env python3
"""Fault injection against the real system: the API, several workers and
the janitor on a private PostgreSQL and a private SeaweedFS, with webhook
receivers that misbehave. While a steady stream of mixed documents comes in
from several accounts, it kills workers with SIGKILL (and restarts them),
restarts PostgreSQL, stops SeaweedFS for a while, and makes the receiver
answer 500s, time out, drop connections and go down. Then it checks the
invariants (see README, "Fault injection") and prints a summary.

Usage: faults.py --bin TARGET/debug [--full] [--seed N]
Called by scripts/faults.sh, which installs and builds what it needs.
"""

import argparse
import collections
import json
import pathlib
import random
import shutil
import sys
import threading
import time

import harness
from harness import log, wait_until

# quick runs in the test command; full is the documented run (BENCHMARKS.md).
PROFILES = {
    "quick": {"duration": 70, "kill_every": 4.5, "workers": 3, "submit_every": 1.2,
              "drain": 150, "min_kills": 10},
    "full": {"duration": 300, "kill_every": 6.0, "workers": 3, "submit_every": 1.0,
             "drain": 300, "min_kills": 30},
}

WEBHOOK_TIMEOUT = 2
JANITOR_INTERVAL = 3
LEASE = 3
# 1 + 12 attempts over about 50 s: longer than any receiver fault window.
RETRY_SCHEDULE = "1s,2s,3s,4s,5s,5s,5s,5s,5s,5s,5s,5s"

# Faults, as (start as a fraction of the run, kind, argument, seconds).
# The full run repeats the cycle.
CYCLE = [
    (0.08, "receiver", "500", 8),
    (0.18, "postgres", "fast", 6),
    (0.32, "receiver", "timeout", 8),
    (0.42, "s3", None, 10),
    (0.56, "receiver", "close", 8),
    (0.66, "receiver", "down", 10),
    (0.80, "postgres", "immediate", 4),
]


def documents():
    """The mixed documents: kind -> (file name, bytes, expected job status,
    expected per-document (status, code) in index order)."""
    png = (harness.ROOT / "examples" / "invoice.png").read_bytes()
    pdf = harness.invoice_pdf(1)
    blank = harness.blank_png()
    ok, mismatch = ("SUCCESS", None), ("FAILED", "template_mismatch")
    return {
        "png": ("invoice.png", png, "SUCCESS", [ok]),
        "pdf": ("invoice.pdf", pdf, "SUCCESS", [ok]),
        "pdf3": ("three-pages.pdf", harness.invoice_pdf(3), "SUCCESS", [ok]),
        "blank": ("blank.png", blank, "FAILED", [mismatch]),
        "corrupt": ("broken.pdf", b"%PDF-1.7\n" + bytes(range(256)) * 8, "FAILED",
                    [("FAILED", "corrupt_document")]),
        "zip_ok": ("batch-ok.zip", harness.zip_of({"a.pdf": pdf, "b.pdf": harness.invoice_pdf(2)}),
                   "SUCCESS", [ok, ok]),
        "zip_mixed": ("batch-mixed.zip", harness.zip_of({"a.png": png, "b.pdf": pdf, "c.png": blank}),
                      "FAILED", [ok, ok, mismatch]),
    }


class Run:
    def __init__(self, args, profile):
        self.args = args
        self.p = profile
        self.random = random.Random(args.seed)
        self.work = pathlib.Path(harness.tempdir("paperhook-faults-"))
        self.stop_submitting = threading.Event()
        self.lock = threading.Lock()
        self.accepted = []  # (account name, job id, kind)
        self.answers = collections.Counter()  # "status code" -> count, all API calls
        self.bad_answers = []  # 5xx other than 503, and hangs
        self.outages = []  # dicts: kind, answers during it, recovery seconds
        self.phase = None  # the outage the prober is watching, if any
        self.probes = []
        self.pg_restarts = 0
        self.s3_stops = 0
        self.receiver_faults = collections.Counter()
        self.docs = documents()
        self.last_outage_end = 0.0  # monotonic time the last PostgreSQL/S3 outage ended
        self.audits = 0
        self.late_files = {}  # storage key -> seconds past its job's delivery

    # --- set-up --------------------------------------------------------------

    def setup(self):
        log(f"work directory {self.work}")
        self.pg = harness.Postgres(self.work)
        self.weed = harness.Seaweed(self.work, "faults")
        self.secrets = {}
        self.receiver = harness.Receiver(self.secrets, WEBHOOK_TIMEOUT)
        self.sys = harness.System(self.args.bin, self.work, {
            "DATABASE_URL": self.pg.url,
            "PAPERHOOK_STORAGE_URL": "s3://faults/run",
            "PAPERHOOK_S3_ENDPOINT": self.weed.endpoint,
            "PAPERHOOK_S3_ACCESS_KEY_ID": harness.S3_KEY,
            "PAPERHOOK_S3_SECRET_ACCESS_KEY": harness.S3_SECRET,
            "PAPERHOOK_WORKER_LEASE_SECS": str(LEASE),
            "PAPERHOOK_WORKER_CONCURRENCY": "2",
            "PAPERHOOK_WORKER_POLL_MS": "500",
            "PAPERHOOK_DB_ACQUIRE_TIMEOUT_SECS": "3",
            "PAPERHOOK_WEBHOOK_TIMEOUT_SECS": str(WEBHOOK_TIMEOUT),
            "PAPERHOOK_WEBHOOK_RETRY_SCHEDULE": RETRY_SCHEDULE,
            "PAPERHOOK_JANITOR_INTERVAL_SECS": str(JANITOR_INTERVAL),
            # A submission cut off by a database restart may have committed:
            # the API keeps its file, and the janitor deletes it if no job
            # came of it.
            "PAPERHOOK_ORPHAN_FILE_GRACE_SECS": "10",
        })
        self.sys.start(self.p["workers"])
        spec = harness.template(self.receiver.url)
        # Two accounts with plenty of credits, one that runs out mid-way.
        self.accounts = [self.sys.account(name, credits, spec)
                         for name, credits in (("Rich A", 100000), ("Rich B", 100000), ("Poor C", 12))]
        for a in self.accounts:
            self.secrets[a["template"]] = a["secret"]

    # --- load and faults -------------------------------------------------------

    def note(self, status, body, secs, where):
        code = body["error"]["code"] if isinstance(body, dict) and "error" in body else ""
        with self.lock:
            self.answers[f"{status} {code}".strip()] += 1
            if status == 0 or (status >= 500 and status != 503):
                self.bad_answers.append((where, status, str(body)[:200], round(secs, 1)))
            if self.phase:
                self.probes.append((self.phase, status, code, secs))

    def submitter(self, n):
        rnd = random.Random(self.args.seed * 100 + n)
        kinds = list(self.docs)
        while not self.stop_submitting.is_set():
            account = rnd.choices(self.accounts, weights=(3, 3, 1))[0]
            kind = rnd.choice(kinds)
            name, data, _, _ = self.docs[kind]
            status, body, secs = self.sys.api.submit(account["key"], account["template"], name, data,
                                                     timeout=20)
            self.note(status, body, secs, f"submit {kind}")
            if status == 202:
                with self.lock:
                    self.accepted.append((account["name"], body["job_id"], kind))
            elif 0 < status < 500 and status != 402:  # (note() records 5xx and hangs)
                with self.lock:
                    self.bad_answers.append((f"submit {kind}", status, str(body)[:200], round(secs, 1)))
            self.stop_submitting.wait(self.p["submit_every"] * 2 * rnd.random())

    def killer(self):
        while not self.stop_submitting.wait(self.p["kill_every"] * (0.5 + self.random.random())):
            victims = [self.random.choice(self.sys.worker_names)]
            if self.random.random() < 0.25:  # sometimes two at once
                victims = self.random.sample(self.sys.worker_names, 2)
            with self.sys.lock:
                for name in victims:
                    self.sys.kill_worker(name)
                # Restart after a moment, as an orchestrator would.
                time.sleep(self.random.random() * 1.5)
                for name in victims:
                    self.sys.start_worker(name)

    def prober(self):
        """Watches the API during outages: every answer must be quick, and
        503 (or a success that raced the outage), never a 500 or a hang."""
        key = self.accounts[0]["key"]
        while not self.stop_submitting.is_set():
            if self.phase:
                status, body, secs = self.sys.api.call("GET", "/v1/account", key, timeout=15)
                self.note(status, body, secs, f"probe {self.phase}")
            self.sys.sample_rss()
            time.sleep(0.25)

    def auditor(self):
        """While the load runs, lists the bucket every few seconds: a file
        whose job was delivered (its last webhook attempt, or its end when
        there was none) longer ago than two janitor periods plus a margin is
        late. Skipped soon after an outage, when nothing could delete."""
        grace = 2 * JANITOR_INTERVAL + 5
        while not self.stop_submitting.wait(3):
            if self.phase or time.monotonic() - self.last_outage_end < grace:
                continue
            try:
                keys = self.stored("run/")
                done = {job: float(age) for job, age in self.pg.query(
                    "SELECT j.id, extract(epoch FROM now() - greatest(j.finished_at, max(a.attempted_at))) "
                    "FROM jobs j LEFT JOIN webhook_deliveries w ON w.job_id = j.id "
                    "LEFT JOIN webhook_attempts a ON a.delivery_id = w.id "
                    "WHERE j.finished_at IS NOT NULL AND NOT EXISTS (SELECT 1 FROM webhook_deliveries p "
                    "  WHERE p.job_id = j.id AND p.state = 'pending') GROUP BY j.id")}
            except (RuntimeError, OSError, harness.subprocess.CalledProcessError):
                continue  # a dependency went down meanwhile
            self.audits += 1
            for key in keys:
                # run/documents/<account>/<job>..., inline/<account>/<job>
                parts = key.split("/")
                job = parts[2] if parts[0] == "inline" and len(parts) == 3 else (
                    parts[3] if len(parts) >= 4 else None)
                if job in done and done[job] > grace:
                    self.late_files[key] = round(done[job])

    def stored(self, prefix=""):
        """Every stored document: the bucket's objects under prefix, and
        the small ones kept in the database with their job."""
        return self.weed.list(prefix) + [row[0] for row in self.pg.query("SELECT key FROM inline_documents")]

    def recovered(self, what, started):
        """Seconds until the API answers a real request again, on its own."""
        key, tpl = self.accounts[0]["key"], self.accounts[0]["template"]

        def ok():
            status, body, secs = self.sys.api.call("GET", "/v1/account", key, timeout=15)
            self.note(status, body, secs, f"recovery {what}")
            if status != 200:
                return False
            if what == "s3":
                name, data, _, _ = self.docs["pdf"]
                status, body, secs = self.sys.api.submit(key, tpl, name, data, timeout=20)
                self.note(status, body, secs, "recovery s3")
                if status == 202:
                    with self.lock:
                        self.accepted.append((self.accounts[0]["name"], body["job_id"], "pdf"))
                return status == 202
            return True

        wait_until(f"the API to recover after the {what} outage", ok, 60, 0.25)
        return time.monotonic() - started

    def fault(self, kind, arg, secs):
        if kind == "receiver":
            log(f"receiver: {arg} for {secs} s")
            self.receiver.set(arg)
            self.receiver_faults[arg] += 1
            time.sleep(secs)
            self.receiver.set("ok")
            return
        log(f"{kind}: down for {secs} s" + (f" ({arg} stop)" if arg else ""))
        self.phase = kind
        with self.lock:
            before = len(self.probes)
        if kind == "postgres":
            self.pg.stop(arg)
            self.pg_restarts += 1
            # A worker restarted while the database is down must wait for it, not exit.
            name = self.random.choice(self.sys.worker_names)
            with self.sys.lock:
                self.sys.kill_worker(name)
                self.sys.start_worker(name)
        else:
            self.weed.stop()
            self.s3_stops += 1
        time.sleep(secs)
        if kind == "postgres":
            self.pg.start()
        else:
            self.weed.start()
        started = time.monotonic()
        self.phase = None
        recovery = self.recovered(kind, started)
        self.last_outage_end = time.monotonic()
        with self.lock:
            seen = self.probes[before:]
        self.outages.append({"kind": kind, "mode": arg, "secs": secs, "recovery_secs": round(recovery, 1),
                             "answers": collections.Counter(f"{s} {c}".strip() for _, s, c, _ in seen),
                             "slowest": round(max((t for *_, t in seen), default=0), 1)})
        log(f"{kind}: back; the API recovered in {recovery:.1f} s")

    def chaos(self):
        d = self.p["duration"]
        cycles = 2 if self.args.full else 1
        plan = sorted((d * (c + at) / cycles, kind, arg, secs)
                      for c in range(cycles) for at, kind, arg, secs in CYCLE)
        t0 = time.monotonic()
        for at, kind, arg, secs in plan:
            delay = at - (time.monotonic() - t0)
            if delay > 0:
                time.sleep(delay)
            self.fault(kind, arg, secs)
        rest = d - (time.monotonic() - t0)
        if rest > 0:
            time.sleep(rest)

    def run(self):
        threads = [threading.Thread(target=self.submitter, args=(n,), daemon=True) for n in range(2)]
        threads += [threading.Thread(target=self.killer, daemon=True),
                    threading.Thread(target=self.prober, daemon=True),
                    threading.Thread(target=self.auditor, daemon=True)]
        for t in threads:
            t.start()
        log(f"load and faults for {self.p['duration']} s")
        self.chaos()
        self.stop_submitting.set()
        for t in threads:
            t.join()
        self.receiver.set("ok")

        log(f"load over: {len(self.accepted)} jobs accepted, {self.sys.kills} workers killed")

    # --- invariants ----------------------------------------------------------------

    def check(self):
        failures = []
        ids = [j for _, j, _ in self.accepted]

        def unfinished():
            rows = self.pg.query("SELECT count(*) FROM jobs WHERE finished_at IS NULL")
            return int(rows[0][0]) == 0

        t0 = time.monotonic()
        try:
            wait_until("every job to finish", unfinished, self.p["drain"], 1)
        except TimeoutError as e:
            failures.append(str(e))
        drain_secs = time.monotonic() - t0
        # Every audit may be skipped (outages, their grace): then the files
        # invariant was never checked during the run.
        if self.audits < 3:
            failures.append(f"only {self.audits} storage audits ran during the load (3 needed "
                            "to check that delivered jobs' files are deleted in time)")

        jobs = {r[0]: r for r in self.pg.query(
            "SELECT id, status, coalesce(error_code, ''), finished_at IS NOT NULL FROM jobs")}
        lost = [j for j in ids if j not in jobs]
        stuck = [j for j in ids if j in jobs and (jobs[j][1] not in ("SUCCESS", "FAILED") or jobs[j][3] != "t")]
        if lost:
            failures.append(f"{len(lost)} accepted jobs are not in the database: {lost[:5]}")
        if stuck:
            failures.append(f"{len(stuck)} jobs did not end SUCCESS or FAILED: "
                            + ", ".join(f"{j} {jobs[j][1]}" for j in stuck[:5]))
        # The API agrees with the database.
        for name, job, _ in random.Random(1).sample(self.accepted, min(20, len(self.accepted))):
            key = next(a["key"] for a in self.accounts if a["name"] == name)
            status, body, _ = self.sys.api.call("GET", f"/job-status?job_id={job}", key)
            if status != 200 or body["status"] != jobs.get(job, [None, None])[1]:
                failures.append(f"job-status of {job} answered {status} {body}")

        # Outcomes: each kind ends as it would without faults (the poor
        # account may also run out of credits).
        docs = collections.defaultdict(list)
        for job, idx, status, code, pages in self.pg.query(
                "SELECT job_id, idx, status, coalesce(error_code, ''), coalesce(pages, 0) "
                "FROM documents ORDER BY job_id, idx"):
            docs[job].append((status, code, int(pages)))
        wrong = []
        for account, job, kind in self.accepted:
            if job not in jobs:
                continue
            _, _, want_status, want_docs = self.docs[kind]
            got = [("SUCCESS" if s == "PROCESS IMAGE SUCCESS" else "FAILED", c or None)
                   for s, c, _ in docs.get(job, [])]
            if account == "Poor C":  # may run out of credits at any document
                ok = len(got) == len(want_docs) and all(
                    g in (w, ("FAILED", "insufficient_credits")) for g, w in zip(got, want_docs))
            else:
                ok = got == want_docs and jobs[job][1] == want_status
            if not ok:
                wrong.append(f"{kind} job {job}: documents {docs.get(job)} (job {jobs[job][1]} {jobs[job][2]})")
        if wrong:
            failures.append(f"{len(wrong)} jobs ended otherwise than without faults: " + "; ".join(wrong[:5]))

        # Credits: each successful document charged exactly once (its pages),
        # nothing for failed ones, balances never negative.
        charges = self.pg.query(
            "SELECT d.status, count(l.id), coalesce(d.pages, 0), coalesce(-sum(l.delta), 0) "
            "FROM documents d LEFT JOIN credit_ledger l ON l.document_id = d.id "
            "GROUP BY d.id, d.status, d.pages")
        for status, n, pages, charged in charges:
            want = (1, int(pages)) if status == "PROCESS IMAGE SUCCESS" else (0, 0)
            if (int(n), int(charged)) != want:
                failures.append(f"a {status} document with {pages} pages was charged {n} times, {charged} credits")
                break
        balances = self.pg.query(
            "SELECT a.name, a.credits, (SELECT coalesce(sum(delta), 0) FROM credit_ledger l WHERE l.account_id = a.id), "
            "(SELECT coalesce(min(balance_after), 0) FROM credit_ledger l WHERE l.account_id = a.id), "
            "(SELECT coalesce(sum(d.pages), 0) FROM documents d JOIN jobs j ON j.id = d.job_id "
            " WHERE j.account_id = a.id AND d.status = 'PROCESS IMAGE SUCCESS'), "
            "(SELECT coalesce(-sum(delta), 0) FROM credit_ledger l WHERE l.account_id = a.id AND reason = 'document') "
            "FROM accounts a")
        for name, credits, ledger_sum, low, pages, charged in balances:
            if int(credits) != int(ledger_sum) or int(low) < 0 or int(credits) < 0 or int(pages) != int(charged):
                failures.append(f"account {name}: balance {credits}, ledger sum {ledger_sum}, lowest balance {low}, "
                                f"pages of successful documents {pages}, charged {charged}")
        n_charges = int(self.pg.query("SELECT count(*) FROM credit_ledger WHERE reason = 'document'")[0][0])

        # Webhooks: every document delivered, all copies with one webhook-id,
        # every signature valid.
        def delivered():
            return int(self.pg.query(
                "SELECT count(*) FROM documents d LEFT JOIN webhook_deliveries w ON w.document_id = d.id "
                "WHERE w.state IS DISTINCT FROM 'delivered'")[0][0]) == 0
        try:
            wait_until("every document's webhook to be delivered", delivered, 90, 1)
        except TimeoutError as e:
            failures.append(str(e) + ": " + str(self.pg.query(
                "SELECT d.id, w.state, w.attempts FROM documents d LEFT JOIN webhook_deliveries w "
                "ON w.document_id = d.id WHERE w.state IS DISTINCT FROM 'delivered' LIMIT 5")))
        with self.receiver.lock:
            reqs = list(self.receiver.requests)
        ids_of = collections.defaultdict(set)
        copies = collections.Counter()
        answered_ok = set()
        answers = collections.defaultdict(list)  # webhook-id -> the receiver's answers, in order
        for r in reqs:
            ids_of[(r["payload"]["job_id"], r["payload"]["document"]["index"])].add(r["id"])
            copies[r["id"]] += 1
            answers[r["id"]].append(r["answered"])
            if r["answered"] == "ok":
                answered_ok.add(r["id"])
        unverified = [r["id"] for r in reqs if not r["verified"]]
        if unverified:
            failures.append(f"{len(unverified)} webhook requests failed signature verification")
        split = {k: v for k, v in ids_of.items() if len(v) > 1}
        if split:
            failures.append(f"{len(split)} documents were sent under several webhook-ids: {list(split.items())[:3]}")
        rows = self.pg.query(
            "SELECT d.job_id, d.idx, coalesce(w.message_id, '') FROM documents d "
            "LEFT JOIN webhook_deliveries w ON w.document_id = d.id")
        missing = [(j, i, m, answers.get(m, [])) for j, i, m in rows if m not in answered_ok]
        if missing:
            failures.append(f"{len(missing)} documents' webhooks never reached the receiver with a 200 "
                            f"(job, index, webhook-id, the receiver's answers): {missing[:5]}")
            for _, _, m, _ in missing[:5]:
                print(f"attempts recorded for {m}:", self.pg.query(
                    "SELECT a.attempted_at, a.status_code, a.error_class, a.latency_ms FROM webhook_attempts a "
                    f"JOIN webhook_deliveries w ON w.id = a.delivery_id WHERE w.message_id = '{m}' ORDER BY a.id"))
        duplicates = sum(n - 1 for n in copies.values())

        # Storage: once a job is delivered, its files go within the janitor's period.
        last = time.monotonic()
        try:
            wait_until("stored files to be deleted", lambda: self.stored() == [],
                       2 * JANITOR_INTERVAL + 10, 0.5)
        except TimeoutError:
            left = self.stored()
            failures.append(f"{len(left)} stored files outlived their job's delivery by more than "
                            f"{2 * JANITOR_INTERVAL + 10} s: {left[:5]}")
        storage_wait = time.monotonic() - last
        if self.late_files:
            failures.append(f"{len(self.late_files)} stored files outlived their job's delivery by more than two "
                            f"janitor periods during the run (key: seconds): {list(self.late_files.items())[:5]}")

        # The API: no 500, no hang; 503 while a dependency was down; recovered on its own.
        if self.bad_answers:
            failures.append(f"{len(self.bad_answers)} API answers were 5xx (not 503) or hung: {self.bad_answers[:5]}")
        for o in self.outages:
            if o["kind"] == "postgres" and not any(a.startswith("503 database_unavailable") for a in o["answers"]):
                failures.append(f"no 503 database_unavailable seen while PostgreSQL was down: {dict(o['answers'])}")
        exited = [n for n in self.sys.check_alive()]
        if exited:
            failures.append(f"processes exited on their own: {exited}")

        summary = {
            "profile": "full" if self.args.full else "quick",
            "duration_secs": self.p["duration"],
            "jobs_accepted": len(ids),
            "jobs_by_status": dict(collections.Counter(jobs[j][1] for j in ids if j in jobs)),
            "documents": len(rows),
            "worker_kills": self.sys.kills,
            "worker_starts": self.sys.worker_starts,
            "postgres_restarts": self.pg_restarts,
            "s3_stops": self.s3_stops,
            "receiver_faults": dict(self.receiver_faults),
            "webhook_requests": len(reqs),
            "webhook_ids": len(copies),
            "duplicate_deliveries": duplicates,
            "charges": n_charges,
            "api_answers": dict(self.answers),
            "outages": [dict(o, answers=dict(o["answers"])) for o in self.outages],
            "drain_secs": round(drain_secs, 1),
            "storage_empty_after_secs": round(storage_wait, 1),
            "storage_audits": self.audits,
            "worker_peak_rss_mib": round(max(self.sys.peak_rss_kib.values(), default=0) / 1024, 1),
        }
        if self.sys.kills < self.p["min_kills"]:
            failures.append(f"only {self.sys.kills} worker kills (want at least {self.p['min_kills']})")
        return summary, failures

    def close(self, keep):
        self.sys.stop()
        self.receiver.close()
        self.weed.close()
        self.pg.close()
        if not keep:
            shutil.rmtree(self.work, ignore_errors=True)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--bin", required=True, help="directory of the built binaries")
    ap.add_argument("--full", action="store_true", help="the long run (documented in BENCHMARKS.md)")
    ap.add_argument("--seed", type=int, default=int(time.time()))
    args = ap.parse_args()
    run = Run(args, PROFILES["full" if args.full else "quick"])
    log(f"seed {args.seed}")
    failures = ["did not finish"]
    try:
        run.setup()
        run.run()
        summary, failures = run.check()
        print(json.dumps(summary, indent=2))
        if failures:
            print("\nFAILED invariants:")
            for f in failures:
                print(f"  - {f}")
            run.sys.tail_logs()
        else:
            print("\nall invariants hold")
    finally:
        run.close(keep=bool(failures))
        if failures:
            print(f"logs kept in {run.work}/logs")
    sys.exit(1 if failures else 0)


if __name__ == "__main__":
    main()
