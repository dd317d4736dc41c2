"""What the Python test programs of `cargo xtask clients` share: their arguments, the values the
fixture (server/demo/demo.jsonl) must come back with, and the report.

A program calls the API through its generated client, turns each answer into "facts" (a name and
the value the client gave for it) and hands them to `main`, which compares them with the
expectations below, prints every check, and exits 1 on any mismatch.
"""

from __future__ import annotations

import argparse
import datetime
import os
import sys
from collections.abc import Callable
from typing import Any

Facts = dict[str, Any]
Step = Callable[[argparse.Namespace], Facts]

# The demo customer, linked to ORDER 1001 of demo-department (server/demo/demo.jsonl).
EXPECTED_200: Facts = {
    "status": 200,
    "customer.id": 700001,
    "customer.customerUuid": "5b8e7c2a-3f4d-4e6a-9b1c-0d2e3f4a5b6c",
    "customer.lastName": "Okafor",
    "customer.emails[0].emailAddress": "maria.okafor@example.com",
    "customer.addresses[0].type": "PRIMARY",
    "customer.addresses[0].updateTS": datetime.datetime(
        2026, 10, 30, 17, 4, 36, 788000, tzinfo=datetime.UTC
    ),
    "vehicles.length": 2,
    "vehicles[0].vin": "WVWZZZ1JZXW000001",
    "vehicles[1].vin": "WF0XXXGCDX1234567",
}
EXPECTED_401: Facts = {"status": 401, "errors[0].errorCode": 2002}


def customer_facts(found: Any, *, type_attribute: str = "type") -> Facts:
    """The facts of a 200's customer_with_vehicles. Both Python clients give it the same
    snake_case attributes, except that openapi-python-client calls an address's `type` `type_`."""
    customer, vehicles = found.customer, found.vehicles
    return {
        "customer.id": customer.id,
        "customer.customerUuid": customer.customer_uuid,
        "customer.lastName": customer.last_name,
        "customer.emails[0].emailAddress": customer.emails[0].email_address,
        "customer.addresses[0].type": getattr(customer.addresses[0], type_attribute),
        "customer.addresses[0].updateTS": customer.addresses[0].update_ts,
        "vehicles.length": len(vehicles),
        "vehicles[0].vin": vehicles[0].vin,
        "vehicles[1].vin": vehicles[1].vin,
    }


def arguments(description: str) -> argparse.Namespace:
    """The command line; every option falls back to an environment variable."""
    env = os.environ.get
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument(
        "--base-url",
        default=env("LINKED_CUSTOMER_API_URL"),
        help="the API's base URL: the server root + /customer (env LINKED_CUSTOMER_API_URL)",
    )
    parser.add_argument(
        "--user", default=env("LINKED_CUSTOMER_USER"), help="env LINKED_CUSTOMER_USER"
    )
    parser.add_argument(
        "--password", default=env("LINKED_CUSTOMER_PASSWORD"), help="env LINKED_CUSTOMER_PASSWORD"
    )
    parser.add_argument(
        "--department", default=env("LINKED_CUSTOMER_DEPARTMENT", "demo-department")
    )
    parser.add_argument(
        "--order", type=int, default=1001, help="an ORDER linked to the demo customer"
    )
    parser.add_argument(
        "--unlinked-order", type=int, default=999999, help="an ORDER with no linked customer"
    )
    args = parser.parse_args()
    for name in ("base_url", "user", "password"):
        if not getattr(args, name):
            parser.error(f"--{name.replace('_', '-')} (or its environment variable) is required")
    return args


def main(
    client: str,
    description: str,
    ok: Step,
    no_content: Step,
    unauthorized: Step,
    returned_for_204: Any = None,
) -> None:
    """Runs the three steps, prints each check, and exits 1 if any failed. `returned_for_204` is
    what the client must give for the body-less 204."""
    args = arguments(description)
    expected_204: Facts = {"status": 204, "returned": returned_for_204}
    steps = [
        (f"200 for {args.department}/ORDER/{args.order}", ok, EXPECTED_200),
        (f"204 for {args.department}/ORDER/{args.unlinked_order}", no_content, expected_204),
        ("401 with a wrong password", unauthorized, EXPECTED_401),
    ]
    failed = []
    for title, step, expected in steps:
        print(f"{client}: {title}")
        try:
            facts = step(args)
        except Exception as error:  # noqa: BLE001 - any failure of the client is a finding
            print(f"  FAIL the call raised {type(error).__name__}: {error}")
            failed.append(title)
            continue
        missing = [name for name in expected if name not in facts]
        if missing:
            print(f"  FAIL not in the answer: {', '.join(missing)} (the client gave {show(facts)})")
            failed.append(title)
        for name, want in expected.items():
            if name in missing:
                continue
            if facts[name] != want or not isinstance(facts[name], type(want)):
                # isinstance: a str enum member stands for its value, but "700001" is no 700001.
                print(f"  FAIL {name}: expected {want!r}, got {show(facts[name])}")
                failed.append(title)
            else:
                print(f"  ok   {name} = {facts[name]!r}")
    if failed:
        print(f"{client}: FAILED: {', '.join(dict.fromkeys(failed))}")
        sys.exit(1)
    print(f"{client}: all checks passed")


def show(value: Any) -> str:
    """A value for the report, cut short: a whole customer is too long for a line."""
    text = repr(value)
    return text if len(text) <= 300 else text[:300] + "..."
