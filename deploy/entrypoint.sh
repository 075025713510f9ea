#!/bin/sh
# Settings arrive as DESKBRIDGE_* environment variables (services/platform/settings.py). A secret may
# arrive as a file instead (a Compose secret whose target is the setting's name): each regular file
# /run/secrets/DESKBRIDGE_* becomes that variable, its trailing newlines dropped, before the command runs.
set -eu
for file in /run/secrets/DESKBRIDGE_*; do
  [ -f "$file" ] || continue
  name=$(basename "$file")
  value=$(cat "$file")
  export "$name=$value"
done
exec "$@"
