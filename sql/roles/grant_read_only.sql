-- Grant a role read-only access to the module's schema: SELECT on every table and view
-- that exists now, and (default privileges) on every one created later.
--
-- Parameters: role (an existing role), schema (default: sim).
-- Run it as the role that runs the migrations: ALTER DEFAULT PRIVILEGES covers the
-- objects that *this* role creates later, not those created by other roles.
--
--   psql -v role=analyst -v schema=sim -f sql/roles/grant_read_only.sql
--   sim-schema grant-read-only analyst        (the same statements, identifiers quoted)
--
-- Nothing here grants INSERT, UPDATE, DELETE, TRUNCATE, REFERENCES, TRIGGER or CREATE:
-- every write and every DDL by the role is refused with "permission denied".

GRANT USAGE ON SCHEMA :"schema" TO :"role";

GRANT SELECT ON ALL TABLES IN SCHEMA :"schema" TO :"role";

ALTER DEFAULT PRIVILEGES IN SCHEMA :"schema" GRANT SELECT ON TABLES TO :"role";
