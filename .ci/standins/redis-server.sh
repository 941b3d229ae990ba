#!/bin/sh
# redis:7-alpine's default is protected-mode off (reachable from other containers).
exec /usr/bin/redis-server "$@" --protected-mode no
