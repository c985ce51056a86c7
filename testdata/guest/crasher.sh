#!/bin/sh
# Runs pinned to CPU 1: lets the other processes reach their blocking calls, then panics the
# kernel from this task (comm "crasher.sh"); `echo` is a shell builtin, so the write to
# /proc/sysrq-trigger is made by this very task.
sleep 2
echo "FIXTURE crashing cpu 1 pid $$"
echo c > /proc/sysrq-trigger
