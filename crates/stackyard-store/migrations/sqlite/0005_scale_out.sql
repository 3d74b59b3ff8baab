-- Uploads sent straight to an object store, processed from there.
ALTER TABLE uploads ADD COLUMN direct INTEGER NOT NULL DEFAULT 0;

-- One replica at a time delivers to a sink: it holds the lease until it
-- expires, renewing it with every delivery.
ALTER TABLE sink_positions ADD COLUMN lease_owner TEXT;
ALTER TABLE sink_positions ADD COLUMN lease_expires_at TEXT;
