#!/bin/sh
# Runs the cookline service named by the first argument, or any other command.
set -e
case "$1" in
  collect|process|train|serve) exec python -m "services.$1" ;;
  gateway) exec python -m gateway ;;
  healthcheck) shift; exec python /usr/local/bin/cookline-healthcheck "$@" ;;
  *) exec "$@" ;;
esac
