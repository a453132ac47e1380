// Drives the admin dashboard in Debian's headless Chromium, as an operator
// would: sign in, approve a pending peer, see the change. Run by
// node/tests/api/admin.rs with ADMIN_URL, ADMIN_TOKEN, PENDING_NODE, COMMUNITY
// and SCREENSHOT set; prints one line per step and exits non-zero on a failure.
import { chromium } from 'playwright-core';

const { ADMIN_URL, ADMIN_TOKEN, PENDING_NODE, SCREENSHOT, COMMUNITY } = process.env;
const executablePath = process.env.CHROMIUM || '/usr/bin/chromium';

function check(ok, what) {
  if (!ok) throw new Error(`check failed: ${what}`);
  console.log(`ok - ${what}`);
}

const browser = await chromium.launch({ executablePath, args: ['--no-sandbox'] });
try {
  const context = await browser.newContext({ viewport: { width: 1280, height: 900 } });
  const page = await context.newPage();
  const errors = [];
  page.on('console', (m) => m.type() === 'error' && errors.push(m.text()));

  await page.goto(`${ADMIN_URL}/admin/`);
  check(await page.locator('input[name=token]').isVisible(), 'the sign-in form is shown');

  await page.fill('input[name=token]', 'not-the-token');
  await page.click('button[type=submit]');
  check((await page.textContent('[role=alert]')).includes('Wrong admin token'), 'a wrong token is refused');
  check((await context.cookies()).length === 0, 'no session without the token');
  errors.length = 0; // the refused sign-in's 401 is logged as a console error

  await page.fill('input[name=token]', ADMIN_TOKEN);
  await page.click('button[type=submit]');
  await page.waitForSelector('#peers');
  const [cookie] = await context.cookies();
  check(cookie && cookie.httpOnly && cookie.sameSite === 'Strict' && cookie.path === '/admin',
    'the session cookie is HttpOnly, SameSite=Strict, Path=/admin');
  check(!cookie.value.includes(ADMIN_TOKEN), 'the cookie does not hold the token');

  const row = page.locator(`tr[data-node="${PENDING_NODE}"]`);
  check(await row.locator('[data-status]').getAttribute('data-status') === 'pending', 'the peer is pending');
  await row.locator('button[data-action=approve]').click();
  await page.waitForSelector('.flash');
  check((await page.textContent('.flash')).includes('is now active'), 'the approval is confirmed');
  check(await row.locator('[data-status]').getAttribute('data-status') === 'active', 'the peer shows as active');
  check(await row.locator('button[data-action=approve]').count() === 0, 'no approve button on an active peer');
  const audit = await page.textContent('#audit');
  check(audit.includes('approve') && audit.includes('dashboard'), 'the audit log shows the approval');
  check(await page.locator('#charts svg, #charts p').count() >= 2, 'both charts are drawn');
  check(await page.locator('#jobs tr[data-job=sync]').count() === 1, 'the jobs table lists sync');
  check(await page.locator('#jobs tr[data-job=blob_gc]').count() === 1, 'the jobs table lists blob_gc');
  check((await page.textContent('#health')).includes('Blobs (fs)'), 'the health cards show the blobs');
  check(await page.locator('#processes tbody tr').count() === 1, 'the processes table lists this process');
  check(await page.locator(`#communities code[title="${COMMUNITY}"]`).count() === 1,
    'the communities table lists the community');

  // A form posted without the session's CSRF token is refused, cookie or not.
  const forged = await page.request.post(`${ADMIN_URL}/admin/peers/${PENDING_NODE}/block`, {
    form: { csrf: 'forged' },
    maxRedirects: 0,
  });
  check(forged.status() === 403, 'a form without the CSRF token is refused');

  await page.screenshot({ path: SCREENSHOT, fullPage: true });
  check(errors.length === 0, `no console errors (${errors.join('; ')})`);

  await page.click('header button[type=submit]');
  check(await page.locator('input[name=token]').isVisible(), 'signing out returns to the sign-in form');
  const after = await page.request.get(`${ADMIN_URL}/admin/`);
  check((await after.text()).includes('Admin token'), 'the old session is gone');
} finally {
  await browser.close();
}
