// tests/browser/converse_chat.js: drives Converse.js in Debian's headless Chromium (puppeteer-core)
// for tests/integration/test_browser.py. Usage: node converse_chat.js PAGE_URL PEER_JID TEXT REPLY
// The page (served by the test) logs in over WebSocket; this script opens a chat with PEER_JID in
// Converse's UI, types TEXT into the chat box, presses Enter and waits until REPLY is shown.
// Prints "OK ..." lines per step; exits non-zero with the reason on failure.
'use strict';
const puppeteer = require('puppeteer-core');

const [url, peer, text, reply, picture] = process.argv.slice(2);
const chromium = process.env.CHROMIUM || '/usr/bin/chromium';
const deadline = Number(process.env.STEP_TIMEOUT_MS || 30000);

(async () => {
    const browser = await puppeteer.launch({
        executablePath: chromium,
        headless: true,
        args: ['--no-sandbox', '--disable-dev-shm-usage', '--disable-gpu'],
    });
    let failed = null;
    try {
        const page = await browser.newPage();
        page.on('console', (m) => { if (['error', 'warn', 'warning'].includes(m.type())) console.log('console: ' + m.text()); });
        page.on('pageerror', (e) => console.log('page error: ' + e.message));
        page.on('requestfailed', (r) => console.log('request failed: ' + r.url()));
        page.on('response', (r) => { if (r.status() >= 400) console.log('HTTP ' + r.status() + ' ' + r.url()); });
        await page.goto(url, { waitUntil: 'load' });
        // logged in: Converse's own status after the WebSocket stream was bound
        await page.waitForFunction(() => window.civitasTest && window.civitasTest.connected, { timeout: deadline });
        console.log('OK logged in over WebSocket as ' + await page.evaluate(() => window.civitasTest.jid));
        await page.evaluate((jid) => window.civitasTest.api.chats.open(jid), peer);
        const box = 'converse-chat-bottom-panel textarea, textarea.chat-textarea';
        await page.waitForSelector(box, { timeout: deadline });
        await page.type(box, text);
        await page.keyboard.press('Enter');
        console.log('OK typed the message in the chat box');
        await page.waitForFunction((r) => Array.from(document.querySelectorAll('.chat-msg__text'))
            .some((e) => e.textContent.includes(r)), { timeout: deadline }, reply);
        console.log('OK the answer is shown in the chat');
        if (picture) {
            const input = await page.waitForSelector('input[type=file].fileupload', { timeout: deadline });
            await input.uploadFile(picture);
            console.log('OK gave the picture to the upload input');
            const src = await page.waitForFunction(() => {
                const img = Array.from(document.querySelectorAll('.chat-msg img'))
                    .find((i) => i.src.includes('/upload/') && i.complete && i.naturalWidth > 0);
                return img ? img.src : null;
            }, { timeout: deadline });
            console.log('OK the uploaded picture is shown: ' + await src.jsonValue());
        }
    } catch (e) {
        failed = e;
    } finally {
        await browser.close();
    }
    if (failed) {
        console.log('FAIL ' + failed.message);
        process.exit(1);
    }
})();
