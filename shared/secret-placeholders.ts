// The Secret template (k8s/secret.template.yaml) fills every secret with "CHANGE_ME". A service started with one of
// those still in place would run on a password published in the repository, so start-up refuses it, naming the
// variable (never echoing its value).
export const SECRET_PLACEHOLDER = 'CHANGE_ME';

/** One message per variable of `names` whose value still holds the template's placeholder (any case). */
export function placeholderSecretProblems(env: Record<string, string | undefined>, names: readonly string[]): string[] {
  return names
    .filter((name) => env[name]?.toUpperCase().includes(SECRET_PLACEHOLDER))
    .map((name) => `${name} still holds the placeholder ${SECRET_PLACEHOLDER} of k8s/secret.template.yaml: set a real secret`);
}
