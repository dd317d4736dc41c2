// Swagger UI in a real browser: drives headless Chromium (Debian's `chromium`) with
// playwright-core through what a person does with the demo: Authorize with Basic credentials,
// Try it out on getLinkedCustomer, Execute, and see the 200 with the customer.
//
// Run by `cargo xtask browser`, which starts the server and passes, as JSON on stdin (so that
// the password is in no command line or environment):
//   {"baseUrl", "user", "password", "department", "entity", "entityId", "expect": [..], "outDir"}
// `require('playwright-core')` resolves through NODE_PATH (.tools/npm/node_modules).

'use strict';

const fs = require('node:fs');
const os = require('node:os');
const path = require('node:path');
const { chromium } = require('playwright-core');

const STEP_TIMEOUT_MS = 15_000;
const WHOLE_TEST_MS = 90_000;
const OPERATION = '#operations-Customer-getLinkedCustomer';

function step(text) {
  console.log(`browser: ${text}`);
}

async function main() {
  const config = JSON.parse(fs.readFileSync(0, 'utf8'));
  fs.mkdirSync(config.outDir, { recursive: true });
  const profile = fs.mkdtempSync(path.join(os.tmpdir(), 'xtask-chromium-'));
  let context;
  let page;
  const watchdog = setTimeout(() => fail(new Error(`the test took more than ${WHOLE_TEST_MS / 1000} s`)), WHOLE_TEST_MS);

  async function cleanup() {
    clearTimeout(watchdog);
    if (context) await context.close().catch(() => {});
    fs.rmSync(profile, { recursive: true, force: true });
  }

  let failing = false;
  async function fail(error) {
    if (failing) return; // the watchdog and the step it interrupted both end up here
    failing = true;
    process.exitCode = 1;
    clearTimeout(watchdog);
    const shot = path.join(config.outDir, 'failure.png');
    try {
      if (page) {
        await page.screenshot({ path: shot, fullPage: true, mask: [page.locator('.curl-command')], timeout: 5_000 });
        console.error(`browser: screenshot of the failure: ${shot}`);
      }
    } catch (shotError) {
      console.error(`browser: no failure screenshot: ${shotError.message}`);
    }
    console.error(`browser: FAILED: ${error.message}`);
    await cleanup();
    process.exit(1);
  }

  try {
    step('launching /usr/bin/chromium (headless, fresh profile)');
    context = await chromium.launchPersistentContext(profile, {
      executablePath: '/usr/bin/chromium',
      headless: true,
      args: [
        '--headless',
        '--no-sandbox',
        '--disable-gpu',
        '--disable-quic',
        '--no-first-run',
        '--disable-background-networking',
        '--disable-component-update',
        '--disable-sync',
      ],
      viewport: { width: 1280, height: 1000 },
      timeout: 30_000,
    });
    page = context.pages()[0] || (await context.newPage());
    page.setDefaultTimeout(STEP_TIMEOUT_MS);
    page.on('pageerror', (err) => console.error(`browser: page error: ${err.message}`));

    const url = `${config.baseUrl}/swagger-ui/`;
    step(`opening ${url}`);
    await page.goto(url, { waitUntil: 'load' });
    await page.locator(OPERATION).waitFor();

    step('Authorize (basicAuth) with the test subscriber');
    await page.locator('.scheme-container button.authorize').click();
    const dialog = page.locator('.dialog-ux .modal-ux');
    await dialog.waitFor();
    await dialog.locator('input[name="username"]').fill(config.user);
    await dialog.locator('input[name="password"]').fill(config.password);
    await dialog.locator('button.modal-btn.authorize').click();
    await dialog.getByText('Authorized', { exact: true }).first().waitFor();
    await dialog.locator('button.btn-done').first().click();
    await dialog.waitFor({ state: 'detached' });

    step('getLinkedCustomer: Try it out');
    const operation = page.locator(OPERATION);
    await operation.locator('.opblock-summary-control').click();
    await operation.locator('button.try-out__btn').click();
    const param = (name) => operation.locator(`tr[data-param-name="${name}"]`);
    await param('serviceSubscriberDepartmentToken').locator('input').fill(config.department);
    await param('entity').locator('select').selectOption(config.entity);
    await param('entityId').locator('input').fill(String(config.entityId));

    step(`Execute (${config.department}, ${config.entity}, ${config.entityId})`);
    await operation.locator('button.execute').click();
    const live = operation.locator('.live-responses-table');
    const status = live.locator('tbody .response .response-col_status').first();
    await status.waitFor().catch(() => {
      throw new Error(`Swagger UI showed no server response within ${STEP_TIMEOUT_MS / 1000} s of Execute`);
    });
    const statusText = (await status.innerText()).trim();
    if (statusText !== '200') {
      const body = await live.innerText();
      throw new Error(`the live response's status is ${statusText}, not 200:\n${body}`);
    }
    const requestUrl = await operation.locator('.request-url pre').innerText();
    const expectedPath = `/department/${config.department}/entity/${config.entity}/${config.entityId}/customer`;
    if (!requestUrl.includes(expectedPath)) {
      throw new Error(`the request went to ${requestUrl}, not to ...${expectedPath}`);
    }
    const body = await live.locator('.response-col_description pre').first().innerText();
    const missing = config.expect.filter((text) => !body.includes(text));
    if (missing.length > 0) {
      throw new Error(`the live response body lacks ${missing.join(', ')}:\n${body}`);
    }
    step(`the page shows status ${statusText} and a body with ${config.expect.join(', ')}`);

    // The operation from its (authorized) title down to the live response.
    const pageY = (element) => element.getBoundingClientRect().top + window.scrollY;
    const top = await operation.evaluate(pageY);
    const bottom = (await live.evaluate(pageY)) + (await live.boundingBox()).height;
    const shot = path.join(config.outDir, 'swagger-ui.png');
    await page.screenshot({
      path: shot,
      fullPage: true,
      clip: { x: 0, y: top, width: 1280, height: bottom - top + 16 },
      // The curl line carries the Authorization header: masked, so no screenshot holds a credential.
      mask: [page.locator('.curl-command')],
    });
    step(`screenshot: ${shot}`);
  } catch (error) {
    await fail(error);
    return;
  }
  await cleanup();
}

main().catch((error) => {
  console.error(`browser: FAILED: ${error.message}`);
  process.exit(1);
});
