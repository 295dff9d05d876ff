#!/bin/sh
# A shipped script: found on PATH, from the unpacked tree ($PILOT_CODE).
echo "measuring visit $1 with $0"
