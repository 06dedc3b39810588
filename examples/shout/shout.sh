#!/bin/sh
# shout: an exec-runtime extension. The payload is on stdin, the result is
# what the script writes to stdout; stderr lines go to the scope's log.
set -eu
echo "shout: invocation ${SCOPED_INVOCATION_ID:-?} of ${SCOPED_EXTENSION:-?}" >&2
exec tr '[:lower:]' '[:upper:]'
