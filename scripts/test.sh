#!/usr/bin/env bash
# Runs mlmon's whole test suite. Installs what the tests drive for real when
# it is missing (Debian: prometheus with promtool, prometheus-node-exporter,
# prometheus-alertmanager, victoria-metrics, prometheus-pushgateway, chromium, openssl, curl; PyPI: prometheus_client, aiosmtpd for the email tests, the OpenTelemetry SDK and its OTLP/HTTP exporter, scipy and numpy for the drift statistics),
# then runs `cargo test`. Extra arguments go to `cargo test`.
set -euo pipefail
cd "$(dirname "$0")/.."

sudo=""
if [ "$(id -u)" != 0 ]; then sudo="sudo"; fi

debs=""
if ! command -v prometheus >/dev/null || ! command -v promtool >/dev/null; then
  debs="$debs prometheus"            # promtool and the PromQL oracle
fi
if ! command -v prometheus-node-exporter >/dev/null; then
  debs="$debs prometheus-node-exporter"   # the oracle for host metrics
fi
if ! command -v prometheus-alertmanager >/dev/null; then
  debs="$debs prometheus-alertmanager"    # receives mlmon's alerts; amtool
fi
if ! command -v chromium >/dev/null; then
  debs="$debs chromium fonts-dejavu-core"  # the dashboard's browser tests
fi
if ! command -v victoria-metrics >/dev/null; then
  debs="$debs victoria-metrics"           # a remote write receiver (and vmagent)
fi
if ! command -v openssl >/dev/null; then
  debs="$debs openssl"                    # certificates for the https tests
fi
if ! command -v prometheus-pushgateway >/dev/null; then
  debs="$debs prometheus-pushgateway"     # the oracle for protobuf and gzip pushes
fi
if ! command -v curl >/dev/null; then
  debs="$debs curl"                       # a client of mlmon's https tests
fi
if [ -n "$debs" ]; then
  echo "installing Debian packages:$debs"
  $sudo apt-get update -qq
  # shellcheck disable=SC2086
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends $debs >/dev/null
fi
# module to import = PyPI package that provides it
for pair in prometheus_client=prometheus_client aiosmtpd=aiosmtpd \
    opentelemetry.sdk=opentelemetry-sdk \
    opentelemetry.exporter.otlp.proto.http=opentelemetry-exporter-otlp-proto-http \
    scipy=scipy numpy=numpy; do
  module="${pair%%=*}" pkg="${pair#*=}"
  if ! python3 -c "import $module" 2>/dev/null; then
    echo "installing PyPI package $pkg"
    python3 -m pip install -q "$pkg"
  fi
done

# Everything is installed now: a test that finds a peer missing fails
# instead of saying it was skipped (as plain `cargo test` does).
export MLMON_REQUIRE_PEERS=1
exec cargo test "$@"
