"""The SQL layer: the engine and the schema's revision, then one module per noun (videos, the
claim, the control row, the scheduler read, the outbox, reports). Functions take a Session and
never commit; they store what the rules decided and never call the rules themselves."""
