// What the TypeScript test programs of `cargo xtask clients` share: their arguments, the values
// the fixture (server/demo/demo.jsonl) must come back with, and the report.
//
// A program calls the API through its generated client, turns each answer into "facts" (a name
// and the value the client gave for it) and hands them to `main`, which compares them with the
// expectations below, prints every check, and exits 1 on any mismatch. xtask copies this file
// next to the program and the generated client, type-checks them together (tsc, strict) and runs
// the output with Node's global fetch.

export type Facts = Record<string, unknown>;

export interface Args {
  /** The API's base URL: the server root + /customer. */
  baseUrl: string;
  user: string;
  password: string;
  department: string;
  order: number;
  unlinkedOrder: number;
}

export type Step = (args: Args) => Promise<Facts>;

// The demo customer, linked to ORDER 1001 of demo-department (server/demo/demo.jsonl).
const EXPECTED_200: Facts = {
  status: 200,
  'customer.id': 700001,
  'customer.customerUuid': '5b8e7c2a-3f4d-4e6a-9b1c-0d2e3f4a5b6c',
  'customer.lastName': 'Okafor',
  'customer.emails[0].emailAddress': 'maria.okafor@example.com',
  'customer.addresses[0].type': 'PRIMARY',
  'customer.addresses[0].updateTS': new Date(Date.UTC(2026, 9, 30, 17, 4, 36, 788)),
  'vehicles.length': 2,
  'vehicles[0].vin': 'WVWZZZ1JZXW000001',
  'vehicles[1].vin': 'WF0XXXGCDX1234567',
};
const EXPECTED_401: Facts = { status: 401, 'errors[0].errorCode': 2002 };

/**
 * What the 200's customerWithVehicles must offer, by structure: both generated clients' types fit
 * it, so tsc also proves that each gives updateTS as a Date.
 */
export interface CustomerWithVehiclesShape {
  customer: {
    id: number;
    customerUuid: string;
    lastName?: string;
    emails: { emailAddress?: string }[];
    addresses: { type?: string; updateTS?: Date }[];
  };
  vehicles: { vin?: string }[];
}

/** The facts of a 200's customerWithVehicles. */
export function customerFacts({ customer, vehicles }: CustomerWithVehiclesShape): Facts {
  return {
    'customer.id': customer.id,
    'customer.customerUuid': customer.customerUuid,
    'customer.lastName': customer.lastName,
    'customer.emails[0].emailAddress': customer.emails[0]?.emailAddress,
    'customer.addresses[0].type': customer.addresses[0]?.type,
    'customer.addresses[0].updateTS': customer.addresses[0]?.updateTS,
    'vehicles.length': vehicles.length,
    'vehicles[0].vin': vehicles[0]?.vin,
    'vehicles[1].vin': vehicles[1]?.vin,
  };
}

const USAGE = `options (each falls back to an environment variable):
  --base-url URL        the server root + /customer   LINKED_CUSTOMER_API_URL
  --user NAME                                         LINKED_CUSTOMER_USER
  --password PASSWORD                                 LINKED_CUSTOMER_PASSWORD
  --department TOKEN    default demo-department       LINKED_CUSTOMER_DEPARTMENT
  --order ID            default 1001 (linked to the demo customer)
  --unlinked-order ID   default 999999 (no customer linked)`;

function usage(problem: string): never {
  console.error(`${problem}\n${USAGE}`);
  process.exit(2);
}

function parseArgs(argv: string[]): Args {
  const given = new Map<string, string>();
  for (let i = 0; i < argv.length; i += 2) {
    const flag = argv[i];
    const value = argv[i + 1];
    if (flag === undefined || !flag.startsWith('--') || value === undefined) {
      usage(`cannot read the arguments at \`${flag ?? ''}\``);
    }
    given.set(flag.slice(2), value);
  }
  const env = process.env;
  const required = (flag: string, variable: string): string =>
    given.get(flag) ?? env[variable] ?? usage(`--${flag} (or ${variable}) is required`);
  const id = (flag: string, fallback: number): number => {
    const text = given.get(flag);
    const value = text === undefined ? fallback : Number(text);
    return Number.isSafeInteger(value) ? value : usage(`--${flag} must be an integer`);
  };
  return {
    baseUrl: required('base-url', 'LINKED_CUSTOMER_API_URL'),
    user: required('user', 'LINKED_CUSTOMER_USER'),
    password: required('password', 'LINKED_CUSTOMER_PASSWORD'),
    department: given.get('department') ?? env['LINKED_CUSTOMER_DEPARTMENT'] ?? 'demo-department',
    order: id('order', 1001),
    unlinkedOrder: id('unlinked-order', 999999),
  };
}

/** Same value and same kind: a Date equals a Date of the same instant, never its string. */
function same(actual: unknown, expected: unknown): boolean {
  if (expected instanceof Date) {
    return actual instanceof Date && actual.getTime() === expected.getTime();
  }
  if (typeof expected !== 'object' || expected === null) {
    return actual === expected;
  }
  return (
    typeof actual === 'object' &&
    actual !== null &&
    Object.getPrototypeOf(actual) === Object.getPrototypeOf(expected) &&
    JSON.stringify(actual) === JSON.stringify(expected)
  );
}

/** A value for the report, cut short: a whole customer is too long for a line. */
function show(value: unknown): string {
  const text =
    value instanceof Date
      ? `Date(${value.toISOString()})`
      : value === undefined
        ? 'undefined'
        : JSON.stringify(value);
  return text.length <= 300 ? text : `${text.slice(0, 300)}...`;
}

function describe(error: unknown): string {
  if (!(error instanceof Error)) {
    return show(error);
  }
  const cause = error.cause instanceof Error ? ` (cause: ${error.cause.message})` : '';
  return `${error.name}: ${error.message}${cause}`;
}

export async function main(
  client: string,
  steps: { ok: Step; noContent: Step; returnedFor204: unknown; unauthorized: Step },
): Promise<void> {
  const args = parseArgs(process.argv.slice(2));
  const plan: [string, Step, Facts][] = [
    [`200 for ${args.department}/ORDER/${args.order}`, steps.ok, EXPECTED_200],
    [
      `204 for ${args.department}/ORDER/${args.unlinkedOrder}`,
      steps.noContent,
      { status: 204, returned: steps.returnedFor204 },
    ],
    ['401 with a wrong password', steps.unauthorized, EXPECTED_401],
  ];
  const failed = new Set<string>();
  for (const [title, step, expected] of plan) {
    console.log(`${client}: ${title}`);
    let facts: Facts;
    try {
      facts = await step(args);
    } catch (error) {
      console.log(`  FAIL the call threw ${describe(error)}`);
      failed.add(title);
      continue;
    }
    const missing = Object.keys(expected).filter((name) => !(name in facts));
    if (missing.length > 0) {
      console.log(`  FAIL not in the answer: ${missing.join(', ')} (the client gave ${show(facts)})`);
      failed.add(title);
    }
    for (const [name, want] of Object.entries(expected)) {
      if (missing.includes(name)) {
        continue;
      } else if (!same(facts[name], want)) {
        console.log(`  FAIL ${name}: expected ${show(want)}, got ${show(facts[name])}`);
        failed.add(title);
      } else {
        console.log(`  ok   ${name} = ${show(facts[name])}`);
      }
    }
  }
  if (failed.size > 0) {
    console.log(`${client}: FAILED: ${[...failed].join(', ')}`);
    process.exit(1);
  }
  console.log(`${client}: all checks passed`);
}
