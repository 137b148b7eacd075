// The public front page.
import { Brand } from '../components/Layout';
import { usePageTitle } from '../components/ui';
import { Link } from '../router';
import { useSession } from '../session';

const FEATURES = [
  { title: 'Isolated runs', text: 'Every invocation runs in its own sandbox with memory, CPU, process and time limits.' },
  { title: 'Python & Node.js', text: 'Lambda-style handlers run unchanged: handler(event, context), warm instances included.' },
  { title: 'HTTP triggers', text: 'Give a function a route and call it at /api/execute/… with a Lambda URL event.' },
  { title: 'Logs & metrics', text: 'Input, output, errors and logs of every run, live log streaming and hourly charts.' },
];

export function Landing() {
  usePageTitle('');
  const session = useSession();
  return (
    <div className="landing">
      <header className="landing-top">
        <Brand />
        <nav aria-label="Account">
          {session ? (
            <Link href="/functions" className="btn btn-primary">
              Open dashboard
            </Link>
          ) : (
            <>
              <Link href="/login" className="btn btn-plain">
                Log in
              </Link>
              <Link href="/register" className="btn btn-primary">
                Sign up
              </Link>
            </>
          )}
        </nav>
      </header>
      <main id="main">
        <section className="hero">
          <h1>
            Serverless functions,
            <br />
            on your own server.
          </h1>
          <p className="lead">
            VoltRun runs your Python and Node.js functions in isolated sandboxes, from a REST API, an HTTP route, the CLI or this
            dashboard. One binary, your hardware, your data.
          </p>
          <div className="hero-cta">
            {session ? (
              <Link href="/functions" className="btn btn-primary btn-large">
                Go to your functions
              </Link>
            ) : (
              <>
                <Link href="/register" className="btn btn-primary btn-large">
                  Create an account
                </Link>
                <Link href="/login" className="btn btn-large">
                  Log in
                </Link>
              </>
            )}
          </div>
          <pre className="hero-code" aria-label="Example">
            <span className="c"># lambda_function.py</span>
            {'\n'}
            <span className="k">def</span> <span className="f">handler</span>(event, context):{'\n'}
            {'    '}
            <span className="k">return</span> {'{'}
            <span className="s">"greeting"</span>: <span className="s">f"Hello, </span>
            {'{'}event[<span className="s">'name'</span>]{'}'}
            <span className="s">"</span>
            {'}'}
          </pre>
        </section>
        <section className="features" aria-label="Features">
          {FEATURES.map((f) => (
            <div key={f.title} className="feature">
              <h2>{f.title}</h2>
              <p>{f.text}</p>
            </div>
          ))}
        </section>
      </main>
    </div>
  );
}
