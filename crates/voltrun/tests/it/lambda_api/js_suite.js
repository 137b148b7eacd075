// The AWS JS SDK v3 (@aws-sdk/client-lambda) against VoltRun: create from a zip, wait for
// Active with the SDK's waiter, invoke. Run by boto_suite.py with the endpoint and a key in
// the environment; prints `JS OK` only when every check held.
const fs = require('fs');
const assert = require('assert');
const { LambdaClient, CreateFunctionCommand, InvokeCommand, GetFunctionCommand, waitUntilFunctionActiveV2 } = require('@aws-sdk/client-lambda');

(async () => {
  const client = new LambdaClient({
    endpoint: process.env.VR_ENDPOINT,
    region: 'us-east-1',
    credentials: { accessKeyId: process.env.AWS_ACCESS_KEY_ID, secretAccessKey: process.env.AWS_SECRET_ACCESS_KEY },
    maxAttempts: 1,
  });
  const name = process.env.VR_NAME;
  const made = await client.send(new CreateFunctionCommand({
    FunctionName: name, Runtime: 'nodejs20.x', Role: 'arn:aws:iam::123456789012:role/ignored', Handler: 'index.handler',
    Code: { ZipFile: fs.readFileSync(process.env.VR_ZIP) },
  }));
  assert.strictEqual(made.FunctionName, name);
  await waitUntilFunctionActiveV2({ client, maxWaitTime: 120, minDelay: 1, maxDelay: 2 }, { FunctionName: name });
  const got = await client.send(new GetFunctionCommand({ FunctionName: name }));
  assert.strictEqual(got.Configuration.State, 'Active');
  const r = await client.send(new InvokeCommand({ FunctionName: name, Payload: Buffer.from(JSON.stringify({ n: 5 })), LogType: 'Tail' }));
  assert.strictEqual(r.StatusCode, 200);
  assert.deepStrictEqual(JSON.parse(Buffer.from(r.Payload).toString()), { js: 15 });
  assert.ok(Buffer.from(r.LogResult, 'base64').toString().includes('REPORT RequestId:'));
  let notFound = null;
  try { await client.send(new GetFunctionCommand({ FunctionName: name + '-nope' })); } catch (e) { notFound = e.name; }
  assert.strictEqual(notFound, 'ResourceNotFoundException');
  console.log('JS OK');
})().catch((e) => { console.error(e); process.exit(1); });
