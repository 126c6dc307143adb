import { useId } from 'react';

/**
 * The "Collection" field of the Upload and Chat pages: free text (an admin may name any, and an
 * admin's upload creates it), or, given `options`, a choice of just those collections.
 */
export default function CollectionField({ value, onChange, options = null, disabled = false, emptyHint }) {
  const id = useId();
  if (Array.isArray(options)) {
    return (
      <div className="field">
        <label htmlFor={id}>Collection</label>
        <select
          id={id}
          name="collection_name"
          value={options.includes(value) ? value : (options[0] ?? '')}
          onChange={(e) => onChange(e.target.value)}
          disabled={disabled || options.length === 0}
        >
          {options.length === 0 && <option value="">(none)</option>}
          {options.map((name) => (
            <option key={name} value={name}>
              {name}
            </option>
          ))}
        </select>
        {options.length === 0 && emptyHint && <p className="hint">{emptyHint}</p>}
      </div>
    );
  }
  return (
    <div className="field">
      <label htmlFor={id}>Collection</label>
      <input
        id={id}
        name="collection_name"
        type="text"
        value={value}
        onChange={(e) => onChange(e.target.value)}
        placeholder="querygpt"
        autoComplete="off"
        spellCheck={false}
        disabled={disabled}
      />
    </div>
  );
}
