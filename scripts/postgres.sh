#!/usr/bin/env bash
# Print a PostgreSQL URL the test suite can use, starting the local cluster if needed.
#
#   scripts/postgres.sh            -> postgresql+psycopg://postgres@127.0.0.1:5432/test
#
# Exits 1, with a loud message on stderr, when no server answers and none could be started.
# Override with PGHOST / PGPORT / PGDATABASE / PGUSER (trust or .pgpass auth expected).
set -u

host=${PGHOST:-127.0.0.1}
port=${PGPORT:-5432}
database=${PGDATABASE:-test}
user=${PGUSER:-postgres}
url="postgresql+psycopg://${user}@${host}:${port}/${database}"

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
python=${PYTHON:-}
if [[ -z $python ]]; then
    if [[ -x $here/../.venv/bin/python ]]; then python=$here/../.venv/bin/python; else python=python3; fi
fi

answers() {
    local have_isready=0
    if command -v pg_isready >/dev/null 2>&1; then
        have_isready=1
        pg_isready -q -h "$host" -p "$port" -d "$database" -U "$user" -t 3 || return 1
    fi
    # pg_isready only says the server accepts connections; when psycopg is at hand, also check
    # that we can log in to the database. Exit 2: no psycopg, so pg_isready's word has to do.
    "$python" - "$host" "$port" "$database" "$user" <<'PY' >/dev/null 2>&1
import sys
try:
    import psycopg
except ImportError:
    sys.exit(2)
host, port, dbname, user = sys.argv[1:]
psycopg.connect(host=host, port=port, dbname=dbname, user=user, connect_timeout=3).close()
PY
    local rc=$?
    [[ $rc -eq 0 || ($rc -eq 2 && $have_isready -eq 1) ]]
}

if answers; then
    echo "$url"
    exit 0
fi

if [[ -d /etc/postgresql ]] && command -v pg_ctlcluster >/dev/null 2>&1; then
    for version in $(ls /etc/postgresql); do
        pg_ctlcluster --skip-systemctl-redirect "$version" main start >&2 || true
    done
    for _ in $(seq 1 20); do
        if answers; then
            echo "$url"
            exit 0
        fi
        sleep 0.5
    done
fi

cat >&2 <<MSG
!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!
!! NO POSTGRESQL: nothing answers at ${host}:${port} (database ${database},
!! user ${user}) and no local cluster could be started.
!! Start one, or point SLIPWAY_TEST_PG_URL at a server you can use.
!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!
MSG
exit 1
