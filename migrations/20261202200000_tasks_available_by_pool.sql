-- Workers claim webhook deliveries apart from the work that takes a CPU
-- (jobs and documents), each in due order: one index each, so a backlog of
-- due deliveries no longer lies in the way of the work, nor the other way
-- round.
CREATE INDEX tasks_available_work ON tasks (run_at, id)
    WHERE state = 'available' AND kind <> 'delivery';
CREATE INDEX tasks_available_sends ON tasks (run_at, id)
    WHERE state = 'available' AND kind = 'delivery';
