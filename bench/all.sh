#!/usr/bin/env bash
# Every benchmark, with the parameters the README's figures come from, one after the other
# (10 to 35 minutes on the 2-core machine, as busy as it is). Needs Postgres and Redis on 127.0.0.1; each benchmark
# creates and drops its own database.
set -euo pipefail
cd "$(dirname "$0")/.."
run() { echo; echo "\$ python $*"; python "$@"; }
run bench/purge.py --sessions 100000 --others 20000 --repeat 3 --seed-loop-cap 1000 --index --one-walker
run bench/purge.py --sessions 100000 --others 20000 --repeat 3 --seed-loop-cap 1000
run bench/export.py --sizes 20000,200000 --repeat 3
run bench/bulk.py --users 10000 --each 10 --repeat 3 --index
run bench/bulk.py --users 10000 --each 10 --repeat 5
run bench/listing.py --rows 1000000 --samples 200
run bench/queue_overhead.py --jobs 1000 --repeat 3
run bench/connections.py --agents 2000 --sdk 300
run bench/resweep.py --sessions 1000000 --users 100000 --repeat 3
run bench/resweep.py --sessions 1000000 --users 1000000 --repeat 3
run bench/fleet.py --agents 2000 --repeat 3 --bulk-users 10000
run bench/intake.py --repeat 7 --seconds 8
# Not here (15 minutes to build 10,000 schemas): python bench/fleet.py --agents 10000 --repeat 3
