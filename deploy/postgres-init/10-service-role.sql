-- The role the services connect as: it may read and append to the event log and write the
-- read models it is granted (each service grants them at start, migrating as the owner
-- `callback` through CALLBACK_MIGRATION_DATABASE_URL). It owns nothing, so it can neither
-- alter the log's triggers nor rewrite the log. Use a role per service and real passwords in
-- production (docs/SECURITY.md).
CREATE ROLE callback_service LOGIN PASSWORD 'callback_service';
