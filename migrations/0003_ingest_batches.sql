-- description: ingest batch ledger that makes a replayed COPY batch detectable
--
-- The bulk writer inserts one row here in the same transaction as the batch's COPY.
-- If a commit succeeded but its acknowledgement was lost, the retry finds the row and
-- skips the batch instead of writing it twice.

CREATE TABLE ingest_batches (
    simulation_id text COLLATE "C" NOT NULL REFERENCES simulations ON DELETE CASCADE,
    batch_id      uuid NOT NULL,
    table_name    text NOT NULL,
    row_count     integer NOT NULL CHECK (row_count >= 0),
    committed_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (simulation_id, batch_id)
);
