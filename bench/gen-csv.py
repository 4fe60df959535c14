#!/usr/bin/env python3
"""Writes a CSV of N users with a sprinkling of bad rows (every 9973rd row has
no '@', every 10007th repeats an earlier email), for the import benchmark.

    python3 bench/gen-csv.py 1000000 > /tmp/users-1m.csv
"""
import sys

n = int(sys.argv[1]) if len(sys.argv) > 1 else 1_000_000
out = sys.stdout
out.write("email,first_name,last_name,department,user group\n")
for i in range(n):
    if i % 9973 == 9972:
        out.write(f"broken-row-{i},First,Last,Dept,staff\n")
    elif i % 10007 == 10006:
        out.write(f"user{i - 5000}@example.com,Dup,Row,Dept,staff\n")
    else:
        out.write(f"user{i}@example.com,First{i},Last{i},Engineering,staff;meetings\n")
