// A model folder's parts must agree with each other and with its recipe before any scoring: a hand-edited
// manifest or a bank from another model would otherwise give silently wrong scores.
import type { MemoryBank } from '../bank/index.js';
import { getRecipe } from '../features/recipes.js';
import type { ModelManifest } from './manifest.js';

/**
 * Refuses a model whose parts disagree: a manifest edited or written by another recipe, or a bank that is not
 * the one the manifest describes. Scoring with it would give numbers that mean nothing. `what` names the model.
 */
export function checkModelConsistency(manifest: ModelManifest, bank: Pick<MemoryBank, 'dim' | 'count'>, what: string): void {
  const recipe = getRecipe(manifest.recipe);
  const problems: string[] = [];
  if (manifest.featureDim !== recipe.dim) problems.push(`featureDim is ${manifest.featureDim} but recipe ${recipe.name} makes ${recipe.dim}-d features`);
  if (manifest.backbone.layers.join(',') !== recipe.layers.join(',')) {
    problems.push(`backbone layers are [${manifest.backbone.layers.join(', ')}] but recipe ${recipe.name} uses [${recipe.layers.join(', ')}]`);
  }
  if (bank.dim !== recipe.dim) problems.push(`its bank holds ${bank.dim}-d entries but recipe ${recipe.name} makes ${recipe.dim}-d features`);
  if (bank.count !== manifest.bank.count || bank.dim !== manifest.bank.dim) {
    problems.push(`its bank holds ${bank.count} x ${bank.dim} entries but the manifest records ${manifest.bank.count} x ${manifest.bank.dim}`);
  }
  if (problems.length > 0) throw new Error(`${what} is inconsistent: ${problems.join('; ')}`);
}
