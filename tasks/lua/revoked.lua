-- Is a stored status record a revocation (a cancel, or Celery's revoke)? A record is
-- JSON whose first field is "status" (tasks/wire/results.py writes it first; Celery's
-- json.dumps of its meta does too); only the first bytes are looked at, so a big result
-- costs no more than a small one.
local function is_revoked(raw)
  if not raw then return false end
  return string.match(string.sub(raw, 1, 64), '^%s*{%s*"status"%s*:%s*"REVOKED"') ~= nil
end
