import { useId } from 'react';

/**
 * An inline confirmation (role alertdialog) with a danger button and Cancel. Escape cancels.
 * The caller keeps the focus handling: `cancelRef` is put on Cancel so it can be focused.
 */
export default function ConfirmBox({ title, children, confirmLabel, busy, onConfirm, onCancel, cancelRef }) {
  const titleId = useId();
  const textId = useId();
  return (
    <div
      className="confirm"
      role="alertdialog"
      aria-labelledby={titleId}
      aria-describedby={children ? textId : undefined}
      onKeyDown={(e) => e.key === 'Escape' && onCancel()}
    >
      <p id={titleId} className="confirm-title">
        {title}
      </p>
      {children && <p id={textId}>{children}</p>}
      <div className="confirm-actions">
        <button type="button" className="danger" onClick={onConfirm} disabled={busy}>
          {confirmLabel}
        </button>
        <button type="button" className="secondary" ref={cancelRef} onClick={onCancel} disabled={busy}>
          Cancel
        </button>
      </div>
    </div>
  );
}
