# shellcheck shell=bash
# Helpers shared by scripts/services and scripts/test. Sourced, never run.

# log MESSAGE...: progress goes to stderr so that stdout stays clean for
# `eval "$(./scripts/services env)"`.
log() { printf '%s: %s\n' "${LOG_PREFIX:-scripts}" "$*" >&2; }

die() {
  log "error: $*"
  exit 1
}

have() { command -v "$1" >/dev/null 2>&1; }

# apt_install PACKAGE...: install Debian packages. `apt-get update` runs at most
# once per run, even across scripts: scripts/test exports the marker so the
# scripts/services it calls does not update again.
apt_install() {
  local sudo=()
  if ((EUID != 0)); then
    have sudo || die "need root (or sudo) to install: $*"
    sudo=(sudo)
  fi
  have apt-get || die "apt-get not found; install these packages by hand: $*"

  # While we install, a policy-rc.d that says "no" keeps postinst scripts from
  # starting system services (a PostgreSQL cluster on 5432, a nats-server on
  # 4222, a Prometheus on 9090) that would hold the ports our own servers use.
  # An existing policy (e.g. the image's) is left as it is.
  local policy=/usr/sbin/policy-rc.d added_policy=0
  if [[ ! -e $policy ]]; then
    printf '#!/bin/sh\n# temporary, from analytics-pipeline scripts\nexit 101\n' |
      "${sudo[@]}" tee "$policy" >/dev/null
    "${sudo[@]}" chmod 755 "$policy"
    added_policy=1
  fi

  local rc=0
  {
    if [[ ${ANALYTICS_APT_UPDATED:-0} != 1 ]]; then
      log "apt-get update"
      "${sudo[@]}" apt-get update -qq
      export ANALYTICS_APT_UPDATED=1
    fi
    log "apt-get install $*"
    "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive \
      apt-get install -y -qq --no-install-recommends "$@" >&2
  } || rc=$?

  if ((added_policy)); then "${sudo[@]}" rm -f "$policy"; fi
  ((rc == 0)) || die "apt-get failed (exit $rc) installing: $*"
}

# cache_dir: per-user cache outside the clone, shared by every clone and CI run.
cache_dir() { printf '%s/analytics-pipeline' "${XDG_CACHE_HOME:-$HOME/.cache}"; }
