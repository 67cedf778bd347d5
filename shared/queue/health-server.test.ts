// The health server on its own: routes answered by their functions, 404 for anything else, 500 naming the path
// when a route throws, and close() dropping the port.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { pino } from 'pino';
import { HealthServer, jsonAnswer } from './health-server.js';

test('serves GET on its routes only; a throwing route answers 500; close() stops listening', async () => {
  let ok = true;
  const server = new HealthServer(
    {
      '/healthz': () => jsonAnswer({ status: ok ? 'ok' : 'unavailable' }, ok),
      '/metrics': async () => {
        throw new Error('registry exploded');
      },
    },
    pino({ level: 'silent' }),
  );
  assert.equal(server.port, null);
  const port = await server.listen(0, '127.0.0.1');
  assert.equal(server.port, port);
  const url = (path: string) => `http://127.0.0.1:${port}${path}`;
  try {
    const up = await fetch(url('/healthz?verbose=1'));
    assert.deepEqual([up.status, up.headers.get('content-type'), up.headers.get('cache-control'), await up.json()], [
      200, 'application/json', 'no-store', { status: 'ok' },
    ]);
    ok = false;
    assert.equal((await fetch(url('/healthz'))).status, 503);
    const post = await fetch(url('/healthz'), { method: 'POST' });
    assert.deepEqual([post.status, await post.json()], [404, { status: 'not found' }]);
    assert.equal((await fetch(url('/toString'))).status, 404, 'only own routes, not inherited properties');
    const broken = await fetch(url('/metrics'));
    assert.deepEqual([broken.status, await broken.text()], [500, '/metrics unavailable: registry exploded\n']);
    await assert.rejects(new HealthServer({}, pino({ level: 'silent' })).listen(port, '127.0.0.1'), { code: 'EADDRINUSE' });
  } finally {
    await server.close();
  }
  await assert.rejects(fetch(url('/healthz')));
  await server.close(); // a second close is a no-op
});
