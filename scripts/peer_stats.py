#!/usr/bin/env python3
"""Prints shop-engine's shop state in the shape the peers' saga_driver verifies (its STATS_CMD):
{"orders":{"CONFIRMED":n,"CANCELLED":m},"notifications":k,"inventory":{"1":stock,...}}

usage: peer_stats.py ENGINE_URL INVENTORY_ADMIN_URL NOTIFICATION_ADMIN_URL
"""
import json
import sys
import urllib.request

PAGE = 1000


def get(url):
    with urllib.request.urlopen(url, timeout=60) as response:
        return json.load(response)


def main():
    engine, inventory, notification = sys.argv[1:4]
    counts = {"CONFIRMED": 0, "CANCELLED": 0}
    cursor = None
    while True:
        url = f"{engine}/api/orders?limit={PAGE}" + (f"&cursor={cursor}" if cursor else "")
        page = get(url)
        for order in page["orders"]:
            counts[order["status"]] = counts.get(order["status"], 0) + 1
        cursor = page.get("next_cursor")
        if not cursor:
            break
    stock = {str(p["productId"]): p["stock"] for p in get(f"{inventory}/stock")}
    notifications = len(get(f"{notification}/notifications"))
    print(json.dumps({"orders": counts, "notifications": notifications, "inventory": stock}))


if __name__ == "__main__":
    main()
