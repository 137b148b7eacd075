import { Empty, usePageTitle } from '../components/ui';
import { Link } from '../router';

export function NotFound() {
  usePageTitle('Not found');
  return (
    <Empty title="Page not found">
      <p>There is nothing at {location.pathname}.</p>
      <Link href="/functions" className="btn btn-primary">
        Back to functions
      </Link>
    </Empty>
  );
}
