// A table of execution records; a row opens the record (click, Enter or Space).
import type { Execution } from '../api';
import { ago, duration } from '../format';
import { StatusBadge } from './ui';

/** The qualifier an execution was called with ("3", "live", "latest"), when the server records one. */
export function qualifierOf(e: Execution): string | null {
  return e.qualifier || null;
}

export function ExecutionsTable({
  items,
  onOpen,
  showFunction = true,
  testId,
}: {
  items: Execution[];
  onOpen: (id: string) => void;
  showFunction?: boolean;
  testId?: string;
}) {
  return (
    <div className="table-scroll">
      <table className="table table-rows-link" data-testid={testId}>
        <thead>
          <tr>
            <th>Status</th>
            {showFunction && <th>Function</th>}
            <th>Version</th>
            <th className="hide-sm">Trigger</th>
            <th className="num">Duration</th>
            <th>Started</th>
            <th className="hide-sm">Execution</th>
          </tr>
        </thead>
        <tbody>
          {items.map((e) => (
            <tr
              key={e.id}
              tabIndex={0}
              data-id={e.id}
              aria-label={`Execution ${e.id}, ${e.status}`}
              onClick={() => onOpen(e.id)}
              onKeyDown={(k) => {
                if (k.key === 'Enter' || k.key === ' ') {
                  k.preventDefault();
                  onOpen(e.id);
                }
              }}
            >
              <td>
                <StatusBadge status={e.status} />
              </td>
              {showFunction && (
                <td className="strong nowrap">
                  {e.function_name}
                </td>
              )}
              <td className="nowrap" data-testid="exec-version">
                v{e.function_version}
                {qualifierOf(e) ? <span className="muted small"> via {qualifierOf(e)}</span> : null}
              </td>
              <td className="hide-sm">{e.trigger}</td>
              <td className="num">{duration(e.duration_ms)}</td>
              <td className="muted nowrap" title={e.created_at}>
                {ago(e.created_at)}
              </td>
              <td className="hide-sm">
                <code className="muted">{e.id}</code>
              </td>
            </tr>
          ))}
        </tbody>
      </table>
    </div>
  );
}
