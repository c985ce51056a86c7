#!/bin/sh
# Keeps CPU 0 busy in user mode, so that CPU 0 is running a user task when CPU 1 panics.
while :; do :; done
